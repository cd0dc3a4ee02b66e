"""Analyzer ``tcp``: Wireshark's TCP expert analysis of the cluster port, per connection
and direction (:mod:`scoutfs_collect.analysis.tcp`), as findings."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, Tuple

from scoutfs_collect import Analyzer, Evidence, Finding, Record, hookimpl
from scoutfs_collect.analysis.packets import ip_of
from scoutfs_collect.analysis.tcp import Connection, Direction, TcpAnalysis

SILENCE = 3.0  # s: a direction silent this long up to the trigger, while its peer spoke on
EVIDENCE = 3  # segments quoted per finding


class Tcp(Analyzer):
    """TCP on the cluster port, from every packet capture (the tcpdump collector's ring,
    read in capture order), per connection and direction, with Wireshark's definitions
    (`tcp.analysis.*` of epan/dissectors/packet-tcp.c; the counts agree with tshark's):

    - `tcp.silence` (warning, network): a side sent nothing for at least 3 s up to the
      trigger while the other side kept sending: the last segment it sent, and for how long
      it was silent;
    - `tcp.retransmission` (warning, network): retransmissions (fast and spurious
      included), and how many of the last came after the other side's last segment
      (`unanswered`: nothing came back after them);
    - `tcp.zero_window` (warning, node-stall): a side advertised a zero window: its kernel
      was up but the application on it (scoutfs) stopped reading;
    - `tcp.reset` (warning, network) and `tcp.fin` (info, network): who sent a RST or a FIN;
    - `tcp.keepalive_unanswered` (warning, network): keep-alive probes (scoutfs: every
      second after keepidle) that got no answer;
    - `tcp.duplicate_ack` (info, network): duplicate ACKs (segments the other way lost);
    - `tcp.connection` (info, network): each connection's sides, their last segment and
      the longest silence before the trigger.

    A capture that starts in mid-connection is not flagged for its first segments."""

    type_name = "tcp"
    sources = ("packets",)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.port = ctx.port
        self.analyses: Dict[Tuple[str, str], TcpAnalysis] = {}  # (node, source)
        self._last: Tuple[Any, Any, Any] = (None, None, None)  # (source, node, its analysis)

    def record(self, rec: Record) -> None:
        seg = rec.data
        if seg is None or seg.proto != 6:
            return
        if rec.source is not self._last[0] or rec.node is not self._last[1]:  # frames come by capture
            analysis = self.analyses.get((rec.node, rec.source))
            if analysis is None:
                analysis = self.analyses[(rec.node, rec.source)] = TcpAnalysis(self.port, self.ctx.trigger)
            self._last = (rec.source, rec.node, analysis)
        self._last[2].feed(seg)

    def finish(self) -> Iterable[Finding]:
        for (node, source), analysis in self.analyses.items():
            for conn in analysis.connections():
                yield from _connection(node, source, conn, self.ctx.trigger)


def _facts(d: Direction, **more) -> Dict[str, object]:
    out: Dict[str, object] = {"src": d.src, "dst": d.dst, "src_ip": ip_of(d.src), "dst_ip": ip_of(d.dst)}
    out.update(more)
    return out


def _evidence(source: str, d: Direction, kinds: Tuple[str, ...]) -> Tuple[Evidence, ...]:
    picked = [e for e in d.events if e.kind in kinds][-EVIDENCE:]
    return tuple(Evidence(source, e.time, e.text) for e in picked)


def _connection(node: str, source: str, conn: Connection, trigger: float) -> Iterator[Finding]:
    sides: List[str] = []
    for d, rev in ((conn.a, conn.b), (conn.b, conn.a)):
        last = "no segment" if d.last is None else f"last segment {d.last - trigger:+.3f} s"
        sides.append(f"{d.src} → {d.dst}: {d.segments} segments, {last}, longest silence "
                     f"{d.longest_silence:.1f} s")
        yield from _direction(node, source, d, rev, trigger)
    yield Finding("tcp.connection", "info", "network", f"connection {conn.a.src} ↔ {conn.a.dst}: "
                  + "; ".join(sides), node, conn.first, (),
                  {"sides": [_facts(d, segments=d.segments, last=d.last,
                                    longest_silence=round(d.longest_silence, 6), silence_from=d.silence_from)
                             for d in (conn.a, conn.b)]})


def _direction(node: str, source: str, d: Direction, rev: Direction, trigger: float) -> Iterator[Finding]:
    who = f"{d.src} → {d.dst}"
    if (d.last is not None and rev.last is not None and rev.last > d.last and not d.resets and not d.fins
            and trigger - d.last >= SILENCE):
        quiet = trigger - d.last
        yield Finding("tcp.silence", "warning", "network",
                      f"nothing from {d.src} to {d.dst} in the {quiet:.1f} s before the trigger while "
                      f"{d.dst} kept sending (its last segment {rev.last - trigger:+.3f} s)", node, d.last,
                      (Evidence(source, d.last, f"{who} last segment"),),
                      _facts(d, silent_s=round(quiet, 6), to_trigger=True, last=d.last))
    if d.retransmissions:
        kinds = [f"{n} {what}" for n, what in ((d.fast_retransmissions, "fast"),
                                              (d.spurious_retransmissions, "spurious")) if n]
        extra = f" ({', '.join(kinds)})" if kinds else ""
        late = d.unanswered_retransmissions
        unanswered = f", the last {late} unanswered" if late else ""
        yield Finding("tcp.retransmission", "warning", "network",
                      f"{who}: {d.retransmissions} retransmissions{extra}{unanswered}", node,
                      d.first_time.get("retransmission"), _evidence(source, d, ("retransmission",)),
                      _facts(d, count=d.retransmissions, unanswered=d.unanswered_retransmissions,
                             fast=d.fast_retransmissions, spurious=d.spurious_retransmissions))
    if d.zero_windows:
        yield Finding("tcp.zero_window", "warning", "node-stall",
                      f"{d.src} advertised a zero window {d.zero_windows} times to {d.dst}: its kernel "
                      "was up, the application on it stopped reading", node, d.first_time.get("zero-window"),
                      _evidence(source, d, ("zero-window",)), _facts(d, count=d.zero_windows))
    if d.resets:
        yield Finding("tcp.reset", "warning", "network", f"{d.src} reset the connection to {d.dst} (RST)",
                      node, d.first_time.get("rst"), _evidence(source, d, ("rst",)),
                      _facts(d, count=d.resets))
    if d.fins:
        yield Finding("tcp.fin", "info", "network",
                      f"{d.src} closed its side of the connection to {d.dst} (FIN)", node,
                      d.first_time.get("fin"), _evidence(source, d, ("fin",)), _facts(d, count=d.fins))
    if d.unanswered_keepalives:
        yield Finding("tcp.keepalive_unanswered", "warning", "network",
                      f"{who}: {d.unanswered_keepalives} of {d.keepalives} keep-alive probes unanswered",
                      node, d.first_time.get("keep-alive"), _evidence(source, d, ("keep-alive",)),
                      _facts(d, count=d.unanswered_keepalives, keepalives=d.keepalives))
    if d.duplicate_acks:
        yield Finding("tcp.duplicate_ack", "info", "network",
                      f"{who}: {d.duplicate_acks} duplicate ACKs (segments from {d.dst} lost or reordered)",
                      node, d.first_time.get("dup-ack"), _evidence(source, d, ("dup-ack",)),
                      _facts(d, count=d.duplicate_acks))


@hookimpl
def scoutfs_collect_register(register):
    register.add_analyzer(Tcp)
