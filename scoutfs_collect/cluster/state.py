"""What the coordinator knows about the run and each node; ``cluster.json`` is made from it.

``cluster.json`` (format 1): ``format``, ``tool``, ``argv``, ``nodeset``, ``origin``
{``node``, ``name``, ``type``, ``reason``, ``time``}, ``times`` {``started``, ``armed``,
``triggered``, ``gathered``}, ``nodes`` {NODE: {``status`` ok|failed|missing|lost,
``exit``, ``archive`` (path in the bundle), ``sha256``, ``trigger`` {``name``, ``type``,
``reason``, ``time``}, ``stopped`` (epoch, node clock), ``stop_lag_ms`` (stopped minus the
origin's trigger time, both moved to the coordinator's clock: good to the two nodes'
``clock_error_ms``, so a peer that stopped within that of the trigger may read below 0),
``clock_offset_ms`` (node clock minus coordinator clock), ``clock_error_ms`` (how far off
that estimate may be: half the shortest round trip it came from; null for a one-way
estimate, which is only a bound), ``error``, ``recovered`` (null, or {``by``,
``workdir``, ``packed_at``, ``note``} when the archive was packed from the work dir of a
run that never finished: killed, or its node powered off)}}.

Statuses: ``ok`` the node's archive is in the bundle (its ``exit`` may be 1: a plugin
failed, its manifest says which); ``failed`` the node ran or was asked but no archive came
back; ``missing`` unreachable at preflight (``--allow-missing``); ``lost`` its session
died mid-run (powered off, ssh gone) before it finished.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

from scoutfs_collect import __version__

FORMAT = 1
PEER_TYPES = ("peer", "operator")  # triggers the coordinator caused: never an origin


@dataclasses.dataclass
class Trigger:
    """A trigger as a node (or the operator) reported it; ``time`` on that node's clock."""

    name: str
    type: str
    reason: str
    time: float


@dataclasses.dataclass
class Origin:
    """The trigger that ended the run everywhere; ``node`` is None for the operator."""

    node: Optional[str]
    name: str
    type: str
    reason: str
    time: float


class ClockOffset:
    """A node's clock minus the coordinator's, NTP-style.

    From ``ping``/``pong`` round trips: offset = node_time - (sent + received) / 2, taken
    from the sample with the shortest round trip (its error is at most half of it). Until
    a round trip is in, every event gives a bound (node_time - received = offset - delay,
    so the largest such value is the best one-way estimate).
    """

    def __init__(self) -> None:
        self.best_rtt: Optional[float] = None
        self.round_trip: Optional[float] = None
        self.one_way: Optional[float] = None

    def pong(self, sent: float, node_time: float, received: float) -> None:
        rtt = received - sent
        if rtt >= 0 and (self.best_rtt is None or rtt < self.best_rtt):
            self.best_rtt = rtt
            self.round_trip = node_time - (sent + received) / 2

    def event(self, node_time: float, received: float) -> None:
        bound = node_time - received
        if self.one_way is None or bound > self.one_way:
            self.one_way = bound

    @property
    def seconds(self) -> Optional[float]:
        return self.round_trip if self.round_trip is not None else self.one_way

    @property
    def error(self) -> Optional[float]:
        """How far :attr:`seconds` may be off the true offset (half the shortest round
        trip), or None for the one-way estimate (a bound, its error unknown)."""
        return self.best_rtt / 2 if self.round_trip is not None and self.best_rtt is not None else None


@dataclasses.dataclass
class Recovered:
    """The archive of a run that never finished, packed later from its work dir."""

    by: str  # "cluster gather" (packed by this gather) or "scoutfs-collect pack" (earlier)
    workdir: Optional[str]  # on the node, when this gather packed it
    packed_at: Optional[float]  # epoch, node clock
    note: str  # the manifest's note: what the archive may lack


@dataclasses.dataclass
class NodeState:
    """One node over the run."""

    name: str
    status: str = "pending"  # pending, running, then ok | failed | missing | lost
    exit: Optional[int] = None
    version: Optional[str] = None
    armed: Optional[float] = None
    trigger: Optional[Trigger] = None
    stopped: Optional[float] = None
    finished: bool = False
    remote_archive: Optional[str] = None
    archive: Optional[str] = None  # path inside the bundle
    sha256: Optional[str] = None
    error: Optional[str] = None
    recovered: Optional[Recovered] = None
    unfinished_workdir: Optional[str] = None  # packed on the node by this gather
    last_event: Optional[str] = None
    last_heard: Optional[float] = None
    output: List[str] = dataclasses.field(default_factory=list)  # last stderr lines
    clock: ClockOffset = dataclasses.field(default_factory=ClockOffset)

    def note_output(self, line: str, keep: int = 20) -> None:
        self.output.append(line)
        del self.output[:-keep]

    def offset(self) -> float:
        return self.clock.seconds or 0.0

    def stop_lag_ms(self, origin: Optional[Origin], origin_offset: float) -> Optional[float]:
        if origin is None or self.stopped is None:
            return None
        lag = (self.stopped - self.offset()) - (origin.time - origin_offset)
        return round(lag * 1000, 3)

    def as_json(self, origin: Optional[Origin], origin_offset: float) -> Dict[str, Any]:
        offset = self.clock.seconds
        return {
            "status": self.status, "exit": self.exit, "archive": self.archive, "sha256": self.sha256,
            "trigger": dataclasses.asdict(self.trigger) if self.trigger else None,
            "stopped": self.stopped, "stop_lag_ms": self.stop_lag_ms(origin, origin_offset),
            "clock_offset_ms": round(offset * 1000, 3) if offset is not None else None,
            "clock_error_ms": round(self.clock.error * 1000, 3) if self.clock.error is not None else None,
            "error": self.error,
            "recovered": dataclasses.asdict(self.recovered) if self.recovered else None,
        }


@dataclasses.dataclass
class ClusterRun:
    """The whole cluster run (or gather): what ``cluster.json`` records."""

    argv: List[str]
    nodeset: str
    nodes: Dict[str, NodeState]
    origin: Optional[Origin] = None
    times: Dict[str, Optional[float]] = dataclasses.field(
        default_factory=lambda: {"started": None, "armed": None, "triggered": None, "gathered": None})

    def origin_offset(self) -> float:
        if self.origin is None or self.origin.node is None:
            return 0.0
        return self.nodes[self.origin.node].offset()

    def as_json(self) -> Dict[str, Any]:
        off = self.origin_offset()
        return {
            "format": FORMAT, "tool": f"scoutfs-collect {__version__}", "argv": self.argv,
            "nodeset": self.nodeset,
            "origin": dataclasses.asdict(self.origin) if self.origin else None,
            "times": dict(self.times),
            "nodes": {name: n.as_json(self.origin, off) for name, n in self.nodes.items()},
        }

    def all_ok(self) -> bool:
        return all(n.status == "ok" for n in self.nodes.values())
