"""Analyzer ``quorum``: gaps in scoutfs's UDP quorum heartbeats and its heartbeat-delay
kernel lines."""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from scoutfs_collect import Analyzer, Evidence, Finding, Record, hookimpl

GAP = 1.0  # s without a heartbeat: 10 of scoutfs's 100 ms intervals (SCOUTFS_QUORUM_HB_IVAL_MS)
LEAST = 10  # datagrams a flow has before the trigger to be taken for a heartbeat
# quorum.c record_hb_delay(): "longest quorum heartbeat %s delay of %lld sec" (%s: "send"
# on the leader, "recv" on a follower), logged for a new maximum of at least 3 s
DELAY = re.compile(r"longest quorum heartbeat (?P<dir>send|recv) delay of (?P<n>\d+) sec")


@dataclasses.dataclass
class Flow:
    """The heartbeats of one sender to one receiver, as one capture saw them."""

    src: str
    dst: str
    count: int = 0
    first: Optional[float] = None
    last: Optional[float] = None
    gaps: int = 0  # gaps of GAP or more
    longest: float = 0.0
    longest_from: Optional[float] = None

    def add(self, t: float) -> None:
        if self.last is not None:
            gap = t - self.last
            if gap >= GAP:
                self.gaps += 1
            if gap > self.longest:
                self.longest, self.longest_from = gap, self.last
        if self.first is None:
            self.first = t
        self.count += 1
        self.last = t


class Quorum(Analyzer):
    """scoutfs's quorum heartbeats: the leader sends one every 100 ms over UDP to each
    other quorum member, on the quorum address (the cluster IP:PORT the capture filters
    on); a follower that hears none for `quorum_heartbeat_timeout_ms` (10 s) starts an
    election. From the packet captures, per sender and receiver (a flow of at least 10
    datagrams before the trigger): `quorum.gap` (warning, network) for the longest gap
    of 1 s or more, and `quorum.stopped` (warning, network) when none came in the last
    second or more before the trigger. From the kernel log (quorum.c, logged for a new
    maximum of at least 3 s, while the recorder ran): `quorum.delay` for `longest quorum
    heartbeat send delay of N sec` (the leader's quorum work ran late: node-stall) and
    `... recv delay of N sec` (a follower heard none: network, or the leader stalled).
    Reads both kinds: skipped when the input has no packet capture or no kernel log."""

    type_name = "quorum"
    sources = ("packets", "kmsg")

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.port = ctx.port
        self.flows: Dict[Tuple[str, str, str, str], Flow] = {}  # (node, source, src, dst)
        self.delays: List[Tuple[Record, re.Match]] = []
        # (src, dst, source, node, flow) of the last datagram: a capture's datagrams mostly
        # come in runs of one flow (a packet-heavy capture hands over a million of them)
        self._last: Tuple[object, ...] = (None, None, None, None, None)

    def record(self, rec: Record) -> None:
        if rec.kind == "kmsg":
            self._line(rec)
            return
        seg = rec.data
        if seg is None or seg.proto != 17 or rec.time > self.ctx.trigger:
            return
        last = self._last
        if seg.src is last[0] and seg.dst is last[1] and rec.source is last[2] and rec.node is last[3]:
            last[4].add(rec.time)  # type: ignore[union-attr]
            return
        if self.port is not None and self.port not in (seg.sport, seg.dport):
            return
        key = (rec.node, rec.source, seg.src, seg.dst)
        flow = self.flows.get(key)
        if flow is None:
            flow = self.flows[key] = Flow(seg.src, seg.dst)
        self._last = (seg.src, seg.dst, rec.source, rec.node, flow)
        flow.add(rec.time)

    def _line(self, rec: Record) -> None:
        if "quorum heartbeat" not in rec.text or rec.time > self.ctx.trigger:
            return
        if rec.time < (self.ctx.started(rec.node) or float("-inf")):
            return  # the ring read at start: not this incident
        m = DELAY.search(rec.text)
        if m:
            self.delays.append((rec, m))

    def finish(self) -> Iterable[Finding]:
        for (node, source, _, _), flow in self.flows.items():
            if flow.count >= LEAST:
                yield from self._flow(node, source, flow)
        for rec, m in self.delays:
            send = m.group("dir") == "send"
            what = ("the leader's heartbeats went out late: its quorum work was held up" if send else
                    "a follower heard no heartbeat: the network, or a stalled leader")
            yield Finding("quorum.delay", "warning", "node-stall" if send else "network",
                          f"longest quorum heartbeat {m.group('dir')} delay of {m.group('n')} s: {what}",
                          rec.node, rec.time, (Evidence(rec.source, rec.time, rec.text),),
                          {"direction": m.group("dir"), "seconds": int(m.group("n"))})

    def _flow(self, node: str, source: str, flow: Flow) -> Iterator[Finding]:
        trig = self.ctx.trigger
        facts = {"src": flow.src, "dst": flow.dst, "heartbeats": flow.count, "gaps": flow.gaps,
                 "longest_s": round(flow.longest, 6)}
        who = f"heartbeats {flow.src} → {flow.dst}"
        if flow.longest >= GAP and flow.longest_from is not None:
            more = f" ({flow.gaps} gaps of {GAP:g} s or more)" if flow.gaps > 1 else ""
            yield Finding("quorum.gap", "warning", "network",
                          f"{who}: none for {flow.longest:.1f} s from "
                          f"{flow.longest_from - trig:+.3f} s{more}",
                          node, flow.longest_from,
                          (Evidence(source, flow.longest_from, f"{who}: last before the gap"),
                           Evidence(source, flow.longest_from + flow.longest, f"{who}: first after the gap")),
                          facts)
        if flow.last is not None and trig - flow.last >= GAP:
            yield Finding("quorum.stopped", "warning", "network",
                          f"{who}: none in the {trig - flow.last:.1f} s before the trigger", node, flow.last,
                          (Evidence(source, flow.last, f"{who}: the last one"),),
                          dict(facts, silent_s=round(trig - flow.last, 6)))


@hookimpl
def scoutfs_collect_register(register):
    register.add_analyzer(Quorum)
