"""Reading a cluster bundle back: the one reader of ``cluster.json`` and of the node
archives in a bundle, for ``scoutfs-collect inspect BUNDLE [--node NODE]`` here and for
the timeline, report and export (:mod:`scoutfs_collect.analysis.bundle`).

A bundle is a tar (uncompressed as the coordinator writes it; any compression
:func:`read.open_stream` reads is accepted) whose first member is ``TOP/cluster.json``,
followed by ``TOP/nodes/NODE/<archive>``. ``inspect BUNDLE`` shows the origin and one
line per node; ``--node NODE`` shows that node's archive as ``inspect ARCHIVE`` does (the
archive is streamed to a private temporary file first).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Collection, Dict, List, Optional, Tuple

from scoutfs_collect.archive import read
from scoutfs_collect.core.errors import EXIT_OK, UsageError
from scoutfs_collect.system.kernel_text import escape_controls
from scoutfs_collect.ui.console import stdout_line

CLUSTER_JSON = "cluster.json"
JSON_MAX = 64 << 20


def _num(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclasses.dataclass
class NodeRecord:
    """One node's entry in cluster.json ``nodes`` (see cluster/state.py for the fields);
    ``archive`` is its archive's path below the bundle's top directory, None when the
    bundle holds none (a ``missing``, ``lost`` or ``failed`` node)."""

    name: str
    status: str
    exit: Optional[int]
    archive: Optional[str]
    trigger: Optional[Dict[str, Any]]
    stop_lag_ms: Optional[float]
    clock_offset_ms: Optional[float]
    error: Optional[str]
    clock_error_ms: Optional[float] = None  # absent in bundles of before 2026-12-06

    @classmethod
    def of(cls, name: str, rec: Dict[str, Any]) -> NodeRecord:
        archive, trig, exit_, error = (rec.get(k) for k in ("archive", "trigger", "exit", "error"))
        return cls(name, str(rec.get("status", "?")), exit_ if isinstance(exit_, int) else None,
                   archive.strip("/") if isinstance(archive, str) and archive.strip("/") else None,
                   trig if isinstance(trig, dict) else None, _num(rec.get("stop_lag_ms")),
                   _num(rec.get("clock_offset_ms")), error if isinstance(error, str) else None,
                   _num(rec.get("clock_error_ms")))


def node_records(doc: Dict[str, Any]) -> List[NodeRecord]:
    """The nodes of a cluster.json that :func:`parse_cluster` accepted, in name order."""
    return [NodeRecord.of(name, rec) for name, rec in sorted(doc["nodes"].items())]


def _below_top(name: str) -> str:
    """A member's path below the bundle's top directory (the name itself when it has none)."""
    parts = name.strip("/").split("/", 1)
    return parts[1] if len(parts) == 2 else parts[0]


def parse_cluster(path: Path, name: str, stream: Optional[IO[bytes]], size: int) -> Dict[str, Any]:
    """cluster.json (member ``name`` of the bundle at ``path``) checked enough for every
    reader: an object whose ``nodes`` is an object of objects. Raises ValueError naming the
    file and the key."""
    if size > JSON_MAX:
        raise ValueError(f"{path}: {name} is too large ({size} bytes)")
    try:
        doc = json.loads(stream.read() if stream else b"")
    except ValueError as exc:
        raise ValueError(f"{path}: {name} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "nodes" not in doc:
        raise ValueError(f"{path}: not a scoutfs-collect cluster bundle (no 'nodes' in {name})")
    if not isinstance(doc["nodes"], dict):
        raise ValueError(f"{path}: cluster.json: 'nodes' is not an object")
    for node, rec in doc["nodes"].items():
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: cluster.json: nodes.{node} is not an object")
    return doc


def is_bundle(path: Path) -> bool:
    """A tar whose first member is ``TOP/cluster.json``."""
    try:
        with read.open_stream(path) as tar:
            first = next(iter(tar), None)
    except ValueError:
        return False
    return first is not None and first.isfile() and "/" in first.name.strip("/") \
        and _below_top(first.name) == CLUSTER_JSON


def copy_archives(path: Path, dest: Path, only: Optional[Collection[str]] = None
                  ) -> Tuple[Dict[str, Any], Dict[str, int], Dict[str, Path]]:
    """One pass over the bundle: its cluster.json, the size of each member (by path below
    the top directory) and, copied into ``dest``, the archive of each node named in
    ``only`` (every node when None; no node when empty), by node name. Raises ValueError
    naming the file when ``path`` is not a bundle or cluster.json is unusable."""
    doc: Optional[Dict[str, Any]] = None
    sizes: Dict[str, int] = {}
    copies: Dict[str, Path] = {}
    wanted: Dict[str, str] = {}  # path below TOP -> node
    with read.open_stream(path) as tar:
        for member in tar:
            rel = _below_top(member.name)
            sizes[rel] = member.size
            if doc is None:
                if rel != CLUSTER_JSON or not member.isfile():
                    raise ValueError(f"{path}: not a scoutfs-collect cluster bundle "
                                     f"(its first member is not TOP/{CLUSTER_JSON})")
                doc = parse_cluster(path, member.name, tar.extractfile(member), member.size)
                wanted = {r.archive: r.name for r in node_records(doc)
                          if r.archive and (only is None or r.name in only)}
            elif rel in wanted and member.isfile() and wanted[rel] not in copies:
                out = dest / f"{len(copies):03d}-{Path(rel).name}"
                src = tar.extractfile(member)
                with open(out, "wb") as f:
                    shutil.copyfileobj(src, f, 1 << 20)  # type: ignore[arg-type]
                copies[wanted[rel]] = out
    if doc is None:
        raise ValueError(f"{path}: not a scoutfs-collect cluster bundle (empty)")
    return doc, sizes, copies


def read_cluster(path: Path) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """``cluster.json`` and the size of each member, by name inside the top directory."""
    doc, sizes, _ = copy_archives(path, Path("."), only=())
    return doc, sizes


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def render(doc: Dict[str, Any], sizes: Dict[str, int]) -> str:
    """The human report of a bundle: header, origin, per-node table."""
    origin = doc.get("origin") or {}
    times = doc.get("times") or {}
    lines: List[str] = [
        f"bundle     {doc.get('nodeset')} ({len(doc.get('nodes') or {})} nodes), {doc.get('tool')}",
        f"started    {read.utc(times.get('started'))}   armed {read.utc(times.get('armed'))}",
        f"gathered   {read.utc(times.get('gathered'))}",
    ]
    if origin:
        where = origin.get("node") or "the coordinator"
        lines.append(f"origin     {where}: {origin.get('name')} ({origin.get('type')}) at "
                     f"{read.utc(origin.get('time'))}")
        lines.append(f"           {origin.get('reason')}")
    else:
        lines.append("origin     none (no node triggered)")
    lines.append("")
    header = f"{'node':<16} {'status':<8} {'exit':>4}  {'trigger':<24} {'stop lag':>10}  {'size':>10}"
    lines += [header, "-" * len(header)]
    for r in node_records(doc):
        trigger = f"{r.trigger.get('name')} ({r.trigger.get('type')})" if r.trigger else "-"
        size = sizes.get(r.archive or "")
        exit_ = "-" if r.exit is None else str(r.exit)
        lines.append(f"{r.name:<16} {r.status:<8} {exit_:>4}  {trigger:<24.24} "
                     f"{_ms(r.stop_lag_ms):>10}  {read.human_size(size):>10}")
        if r.error:
            lines.append(f"{'':<16} {r.error}")
    return "\n".join(escape_controls(line) for line in lines)  # the origin's reason: a kernel line


def _extract_node(path: Path, node: str, dest: Path) -> Path:
    doc, _, copies = copy_archives(path, dest, only=[node])
    record = next((r for r in node_records(doc) if r.name == node), None)
    if record is None:
        known = ", ".join(sorted(doc["nodes"]))
        raise UsageError(f"inspect: --node {node!r}: not in this bundle (nodes: {known})")
    if record.archive is None:
        raise UsageError(f"inspect: --node {node}: no archive in the bundle "
                         f"({record.status}: {record.error})")
    if node not in copies:
        raise UsageError(f"inspect: --node {node}: {record.archive} is missing from the bundle")
    return copies[node]


def inspect(path: Path, node: Optional[str], as_json: bool, members: bool) -> int:
    """``inspect BUNDLE [--node NODE] [--json] [--members]``."""
    with tempfile.TemporaryDirectory(prefix="scoutfs-collect-inspect.") as tmp:
        try:
            if node is None:
                doc, sizes = read_cluster(path)
            else:
                archive = _extract_node(path, node, Path(tmp))
        except ValueError as exc:
            raise UsageError(f"inspect: {exc}") from None
        if node is None:
            stdout_line(json.dumps(doc, indent=2) if as_json else render(doc, sizes))
            if members:
                for name, size in sizes.items():
                    stdout_line(f"{size:>14}  {name}")
            return EXIT_OK
        try:
            manifest = read.read_manifest(archive)
        except ValueError as exc:
            raise UsageError(f"inspect: {node}: {exc}") from None
        stdout_line(json.dumps(manifest, indent=2) if as_json else read.render(manifest))
        if members:
            for name, size in read.list_members(archive):
                stdout_line(f"{size:>14}  {name}")
    return EXIT_OK
