"""Reading a cluster bundle back (``scoutfs-collect inspect BUNDLE [--node NODE]``).

A bundle is an uncompressed tar whose first member is ``TOP/cluster.json``, followed by
``TOP/nodes/NODE/<archive>``. ``inspect BUNDLE`` shows the origin and one line per
node; ``--node NODE`` shows that node's archive as ``inspect ARCHIVE`` does (the
archive is streamed to a private temporary file first).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from scoutfs_collect.archive import read
from scoutfs_collect.core.errors import EXIT_OK, UsageError
from scoutfs_collect.ui.console import stdout_line

CLUSTER_JSON = "cluster.json"
JSON_MAX = 64 << 20


def is_bundle(path: Path) -> bool:
    """An uncompressed tar that starts with ``TOP/cluster.json``."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            first = tar.next()
    except (tarfile.TarError, OSError):
        return False
    return first is not None and first.name.strip("/").split("/")[-1] == CLUSTER_JSON


def read_cluster(path: Path) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """``cluster.json`` and the size of each member, by name inside the top directory."""
    sizes: Dict[str, int] = {}
    doc: Optional[Dict[str, Any]] = None
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            parts = member.name.strip("/").split("/", 1)
            rel = parts[1] if len(parts) == 2 else parts[0]
            sizes[rel] = member.size
            if rel == CLUSTER_JSON and doc is None and member.size <= JSON_MAX:
                f = tar.extractfile(member)
                try:
                    doc = json.loads(f.read()) if f else None
                except ValueError as exc:
                    raise ValueError(f"{path}: {member.name} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "nodes" not in doc:
        raise ValueError(f"{path}: not a scoutfs-collect cluster bundle (no TOP/cluster.json)")
    return doc, sizes


def _ms(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.1f} ms"


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
    for name, node in sorted((doc.get("nodes") or {}).items()):
        trig = node.get("trigger") or {}
        trigger = f"{trig.get('name')} ({trig.get('type')})" if trig else "-"
        size = sizes.get(node.get("archive") or "")
        exit_ = "-" if node.get("exit") is None else str(node.get("exit"))
        lines.append(f"{name:<16} {node.get('status', '?'):<8} {exit_:>4}  {trigger:<24.24} "
                     f"{_ms(node.get('stop_lag_ms')):>10}  {read.human_size(size):>10}")
        if node.get("error"):
            lines.append(f"{'':<16} {node['error']}")
    return "\n".join(lines)


def _extract_node(path: Path, doc: Dict[str, Any], node: str, dest: Path) -> Path:
    entry = (doc.get("nodes") or {}).get(node)
    if entry is None:
        known = ", ".join(sorted(doc.get("nodes") or {}))
        raise UsageError(f"inspect: --node {node!r}: not in this bundle (nodes: {known})")
    if not entry.get("archive"):
        raise UsageError(f"inspect: --node {node}: no archive in the bundle "
                         f"({entry.get('status')}: {entry.get('error')})")
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            rel = member.name.strip("/").split("/", 1)[-1]
            if rel == entry["archive"] and member.isfile():
                out = dest / Path(rel).name
                src = tar.extractfile(member)
                assert src is not None
                with open(out, "wb") as f:
                    shutil.copyfileobj(src, f, 1 << 20)
                return out
    raise UsageError(f"inspect: --node {node}: {entry['archive']} is missing from the bundle")


def inspect(path: Path, node: Optional[str], as_json: bool, members: bool) -> int:
    """``inspect BUNDLE [--node NODE] [--json] [--members]``."""
    try:
        doc, sizes = read_cluster(path)
    except (ValueError, tarfile.TarError) as exc:
        raise UsageError(f"inspect: {exc}") from None
    if node is None:
        stdout_line(json.dumps(doc, indent=2) if as_json else render(doc, sizes))
        if members:
            for name, size in sizes.items():
                stdout_line(f"{size:>14}  {name}")
        return EXIT_OK
    with tempfile.TemporaryDirectory(prefix="scoutfs-collect-inspect.") as tmp:
        archive = _extract_node(path, doc, node, Path(tmp))
        try:
            manifest = read.read_manifest(archive)
        except ValueError as exc:
            raise UsageError(f"inspect: {node}: {exc}") from None
        stdout_line(json.dumps(manifest, indent=2) if as_json else read.render(manifest))
        if members:
            for name, size in read.list_members(archive):
                stdout_line(f"{size:>14}  {name}")
    return EXIT_OK
