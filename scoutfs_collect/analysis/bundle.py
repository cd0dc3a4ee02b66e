"""Cluster bundles for the analysis: each node's record in cluster.json with its archive
copied out of the bundle (read by :mod:`scoutfs_collect.archive.bundle`, the one reader
of bundles), and the origin's trigger on the coordinator's clock, which every node's
times are aligned to with its ``clock_offset_ms`` (its clock minus the coordinator's)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional

from scoutfs_collect.archive import bundle as archive_bundle
from scoutfs_collect.archive.bundle import NodeRecord
from scoutfs_collect.system.kernel_text import escape_controls


@dataclasses.dataclass
class BundleNode:
    """One node of a bundle: its record in cluster.json and its archive copied out
    (None when the bundle holds none)."""

    record: NodeRecord
    archive: Optional[Path]

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def clock_offset_ms(self) -> float:
        """The node's clock minus the coordinator's; 0 when cluster.json has no estimate."""
        return self.record.clock_offset_ms or 0.0


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

    def origin_text(self) -> str:
        """``th2: freeze (kmsg): <reason>``; the coordinator's for an operator's stop."""
        o = self.origin
        if not o:
            return "none (no node triggered)"
        return f"{o.get('node') or 'the coordinator'}: {o.get('name')} ({o.get('type')}): {o.get('reason')}"

    def header_lines(self) -> List[str]:
        """What the timeline says of the bundle before its records: the origin, and each
        node whose archive is not in the bundle (a lost node is often the one that matters);
        control characters escaped (the origin's reason is a kernel line)."""
        lines = [f"  origin {self.origin_text()}"]
        for n in self.nodes:
            if n.archive is None:
                r = n.record
                why = r.error or "no error recorded"
                lines.append(f"  {r.name}: no archive in the bundle ({r.status}: {why})")
        return [escape_controls(line) for line in lines]

    def reference(self) -> Optional[float]:
        """The origin's trigger time on the coordinator's clock (origin.time is the
        origin node's own reading, so its clock offset is taken off)."""
        t = self.origin.get("time")
        if not isinstance(t, (int, float)) or isinstance(t, bool):
            return None
        origin = self.node(str(self.origin.get("node")))
        return float(t) - (origin.clock_offset_ms / 1000 if origin else 0.0)


def open_bundle(path: Path, dest: Path) -> Optional[Bundle]:
    """The bundle at ``path`` with its node archives copied into ``dest``; None when
    ``path`` is not a bundle (then it is read as a single archive). Raises ValueError
    naming the file and key when cluster.json is unusable."""
    if not archive_bundle.is_bundle(path):
        return None
    doc, _, copies = archive_bundle.copy_archives(path, dest)
    nodes = [BundleNode(r, copies.get(r.name)) for r in archive_bundle.node_records(doc)]
    return Bundle(Path(path), doc, nodes)
