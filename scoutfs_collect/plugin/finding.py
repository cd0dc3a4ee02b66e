"""What analyzers see and say (see :class:`scoutfs_collect.plugin.api.Analyzer`): the
records they are handed (:class:`Record`), the archive or bundle they are reading
(:class:`AnalysisContext`, :class:`NodeInfo`) and what they yield (:class:`Finding`,
with :class:`Evidence`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

#: The severities and categories a finding may carry.
SEVERITIES = ("info", "warning", "error")
CATEGORIES = ("fence", "network", "node-stall", "memory", "lock", "capture", "clock")


@dataclasses.dataclass(frozen=True)
class Evidence:
    """One record a finding rests on: its ``source`` (plugin instance, e.g. ``dmesg``),
    ``time`` (aligned epoch seconds) and ``text`` as recorded."""

    source: str
    time: Optional[float]
    text: str

    def as_dict(self) -> Dict[str, Any]:
        return {"source": self.source, "time": _round(self.time), "text": self.text}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One conclusion drawn from the records.

    ``key``: stable, dotted (``kernel.hung_task``); ``severity``: info, warning or error;
    ``category``: fence, network, node-stall, memory, lock, capture or clock; ``node``:
    whose data shows it (the bundle's node name, else the archive's host); ``time``:
    aligned epoch seconds (None when it is not about an instant); ``summary``: one line a
    support engineer would write; ``evidence``: a few records; ``details``: JSON-able
    facts for other analyzers and the verdict (e.g. the fence's victim address).
    ``relative`` (seconds to the trigger) is filled in when the findings are collected."""

    key: str
    severity: str
    category: str
    summary: str
    node: str = ""
    time: Optional[float] = None
    evidence: Tuple[Evidence, ...] = ()
    details: Dict[str, Any] = dataclasses.field(default_factory=dict, hash=False, compare=False)
    relative: Optional[float] = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"finding {self.key}: severity {self.severity!r} is not one of {SEVERITIES}")
        if self.category not in CATEGORIES:
            raise ValueError(f"finding {self.key}: category {self.category!r} is not one of {CATEGORIES}")

    def as_dict(self) -> Dict[str, Any]:
        return {"key": self.key, "severity": self.severity, "category": self.category,
                "node": self.node, "time": _round(self.time), "relative": _round(self.relative),
                "summary": self.summary, "evidence": [e.as_dict() for e in self.evidence],
                "details": dict(self.details)}


@dataclasses.dataclass(frozen=True)
class Record:
    """One record handed to :meth:`Analyzer.record`: ``node`` (as in :class:`Finding`),
    ``source`` (the plugin instance), ``kind`` (``kmsg``, ``ftrace``, ``packets``,
    ``counters`` or ``sysinfo``), ``time`` (aligned epoch seconds), ``text`` (the kernel
    line; ``src → dst TCP len N`` of a packet; ``name +change  (mount)`` of a counter; the
    snapshot's label for sysinfo) and ``data``: the decoded TCP segment or UDP datagram of
    a packet (:class:`scoutfs_collect.analysis.packets.Segment`: addresses, ports, seq,
    ack, flags, window, payload length, ``proto`` 6 or 17; None for any other frame),
    ``(mount, counter, change)`` of a counter (the increase since the previous sample;
    None at its first sighting), the sysinfo snapshot (a dict)."""

    node: str
    source: str
    kind: str
    time: float
    text: str
    data: Any = None

    def __init__(self, node: str, source: str, kind: str, time: float, text: str, data: Any = None) -> None:
        # the generated __init__ of a frozen dataclass sets each field through
        # object.__setattr__: 3x the cost, for one Record per captured frame
        d = self.__dict__
        d["node"], d["source"], d["kind"] = node, source, kind
        d["time"], d["text"], d["data"] = time, text, data


@dataclasses.dataclass
class NodeInfo:
    """One node of the input: its ``name`` (as in :class:`Finding`), its manifest (None
    when the bundle holds no archive of it: ``status`` and ``error`` then say why), the
    source kinds its archive holds, and its addresses (from sysinfo, as far as read)."""

    name: str
    manifest: Optional[Dict[str, Any]]
    kinds: Tuple[str, ...] = ()
    status: str = "ok"
    error: str = ""
    addresses: List[str] = dataclasses.field(default_factory=list)
    clock_offset_ms: Optional[float] = None


@dataclasses.dataclass
class AnalysisContext:
    """What an analyzer knows of the input besides its records: ``trigger`` (aligned
    epoch seconds; the origin's trigger in a bundle), ``nodes`` (every node, also those
    without an archive; complete by the time :meth:`Analyzer.finish` runs), ``bundle``
    (whether the input is a cluster bundle) and ``target`` (``IP:PORT`` recorded)."""

    trigger: float
    nodes: List[NodeInfo] = dataclasses.field(default_factory=list)
    bundle: bool = False
    target: str = ""

    def node(self, name: str) -> Optional[NodeInfo]:
        return next((n for n in self.nodes if n.name == name), None)

    @property
    def port(self) -> Optional[int]:
        """The port of ``target`` (the cluster port), None when there is none."""
        tail = self.target.rsplit(":", 1)[-1]
        return int(tail) if tail.isdigit() else None

    def started(self, name: str) -> Optional[float]:
        """When the recorder of node ``name`` started (aligned epoch seconds), or None.
        Kernel lines before it come from the ring read at start: context, possibly days
        old, not the incident."""
        n = self.node(name)
        times = n.manifest.get("times") if n is not None and isinstance(n.manifest, dict) else None
        t = times.get("started") if isinstance(times, dict) else None
        if not isinstance(t, (int, float)) or isinstance(t, bool):
            return None
        return float(t) - ((n.clock_offset_ms or 0.0) / 1000 if n is not None else 0.0)

    def node_of_address(self, ip: str) -> Optional[NodeInfo]:
        """The one node named ``ip`` (a bundle's nodes may be named by address), else the
        one with ``ip`` among its addresses (sysinfo); None when none or several have it
        (loopback: the node of a single archive, whose mounts talk over lo)."""
        named = [n for n in self.nodes if n.name == ip]
        if named:
            return named[0]
        found = [n for n in self.nodes if ip in n.addresses]
        return found[0] if len(found) == 1 else None


def _round(t: Optional[float]) -> Optional[float]:
    return None if t is None else round(t, 6)
