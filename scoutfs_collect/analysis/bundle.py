"""Cluster bundles (``scoutfs-collect-cluster.*.tar``): one top directory holding
``cluster.json`` and ``nodes/NODE/<that node's archive>``. cluster.json ``nodes`` gives
each node's ``clock_offset_ms`` (its clock minus the coordinator's), ``stop_lag_ms``,
``trigger``, ``status`` and ``archive``; ``origin`` the node whose trigger fired first.

The node archives (compressed) are copied out of the bundle stream into a temporary
directory, one at a time, so each can then be streamed like a single archive."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from scoutfs_collect.archive import read as archive_read

CLUSTER_JSON = "cluster.json"
CLUSTER_MAX = 16 << 20


@dataclasses.dataclass
class BundleNode:
    """One node of a bundle: its record in cluster.json and its archive copied out."""

    name: str
    status: str
    archive: Optional[Path]
    clock_offset_ms: float = 0.0
    stop_lag_ms: Optional[float] = None
    trigger: Optional[Dict[str, Any]] = None
    error: Optional[str] = None


@dataclasses.dataclass
class Bundle:
    """A cluster bundle read back: cluster.json and its nodes in name order."""

    path: Path
    cluster: Dict[str, Any]
    nodes: List[BundleNode]

    @property
    def origin(self) -> Dict[str, Any]:
        origin = self.cluster.get("origin")
        return origin if isinstance(origin, dict) else {}

    def node(self, name: str) -> Optional[BundleNode]:
        return next((n for n in self.nodes if n.name == name), None)

    def reference(self) -> Optional[float]:
        """The origin's trigger time on the coordinator's clock (origin.time is the
        origin node's own reading, so its clock offset is taken off)."""
        t = self.origin.get("time")
        if not isinstance(t, (int, float)) or isinstance(t, bool):
            return None
        origin = self.node(str(self.origin.get("node")))
        return float(t) - (origin.clock_offset_ms / 1000 if origin else 0.0)


def _num(v: Any, default: Optional[float]) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def open_bundle(path: Path, dest: Path) -> Optional[Bundle]:
    """The bundle at ``path`` with its node archives copied into ``dest``; None when
    ``path`` is a single archive (its first member is TOP/manifest.json). Raises
    ValueError naming the file and key when cluster.json is unreadable."""
    cluster: Optional[Dict[str, Any]] = None
    copied: Dict[str, Path] = {}  # path in the bundle (below TOP) -> copy
    with archive_read.open_stream(path) as tar:
        for member in tar:
            parts = member.name.strip("/").split("/")
            if len(parts) == 2 and parts[1] == "manifest.json":
                return None
            if not member.isfile():
                continue
            if len(parts) == 2 and parts[1] == CLUSTER_JSON:
                if member.size > CLUSTER_MAX:
                    raise ValueError(f"{path}: {member.name} is too large")
                f = tar.extractfile(member)
                try:
                    cluster = json.loads(f.read() if f else b"")
                except ValueError as exc:
                    raise ValueError(f"{path}: {member.name} is not valid JSON: {exc}") from None
            elif len(parts) == 4 and parts[1] == "nodes":
                out = dest / f"{len(copied):03d}-{parts[3]}"
                f = tar.extractfile(member)
                with open(out, "wb") as w:
                    shutil.copyfileobj(f, w, 1 << 20)
                copied["/".join(parts[1:])] = out
    if cluster is None:
        raise ValueError(f"{path}: neither an archive (TOP/manifest.json) nor a bundle (TOP/cluster.json)")
    nodes_doc = cluster.get("nodes")
    if not isinstance(nodes_doc, dict):
        raise ValueError(f"{path}: cluster.json: 'nodes' is not an object")
    nodes = []
    for name, rec in sorted(nodes_doc.items()):
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: cluster.json: nodes.{name} is not an object")
        rel = rec.get("archive")
        archive = None
        if isinstance(rel, str) and rel:
            rel = rel.strip("/")
            archive = copied.get(rel) or next((p for k, p in copied.items() if k.endswith("/" + rel)
                                               or rel.endswith(k)), None)
        trig = rec.get("trigger")
        nodes.append(BundleNode(
            name, str(rec.get("status", "?")), archive, _num(rec.get("clock_offset_ms"), 0.0) or 0.0,
            _num(rec.get("stop_lag_ms"), None), trig if isinstance(trig, dict) else None,
            rec.get("error") if isinstance(rec.get("error"), str) else None))
    return Bundle(Path(path), cluster, nodes)
