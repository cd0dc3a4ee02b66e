"""Analyzer ``coverage``: whether each node's kept history reaches back over the silence
that led to the fence -- what the archive cannot show."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Tuple

from scoutfs_collect import Analyzer, Evidence, Finding, hookimpl
from scoutfs_collect.analysis import history
from scoutfs_collect.analysis.clocks import ClockMap

KEEPALIVE_S = 24.0  # scoutfs tcp_keepalive_timeout_ms default: TCP_USER_TIMEOUT
RECONNECT_S = 20.0  # net.c: the client's reconnect timeout before the server fences it
RECOVERY_S = 30.0  # server.c: the recovery timeout of client_recovery
QUORUM_S = 10.0  # quorum_block_leader: the heartbeats before an election (no fixed figure)
#: the trigger line's words -> (fence path, seconds of silence before it that matter)
SPANS: Tuple[Tuple[str, str, float], ...] = (
    ("reconnect timed out", "client_reconnect", KEEPALIVE_S + RECONNECT_S),
    ("recovery timeout expired", "client_recovery", RECOVERY_S),
    ("fencing previous leader", "quorum_block_leader", QUORUM_S),
)


def span_of(manifests: Iterable[Dict[str, Any]]) -> Tuple[str, float]:
    """The fence path named by a trigger reason of these manifests, and its span."""
    for m in manifests:
        trig = m.get("trigger") if isinstance(m.get("trigger"), dict) else {}
        reason = str(trig.get("reason") or "")
        for words, path, span in SPANS:
            if words in reason:
                return path, span
    return "", KEEPALIVE_S + RECONNECT_S


class Coverage(Analyzer):
    """For each node and source, whether the history it kept reaches back over the
    silence that led to the fence: the keepalive timeout (24 s) plus the reconnect
    timeout (20 s) before a client_reconnect fence, the 30 s recovery timeout before a
    client_recovery fence (the longest, 44 s, when the trigger was not a fencing line).
    `coverage.short` (warning) when a source's oldest record is younger than that (for
    the kernel log: when the recorder started later, as only lines logged while it ran
    are judged),
    `coverage.lost` (warning) when records were lost inside that span (ftrace ring
    overruns, pcap files rotated out or packets dropped by the kernel, kernel log
    records lost), `coverage.no_archive` (warning) for a node of a bundle without
    an archive, `coverage.ok` (info) when a source covers it all. From the manifests."""

    type_name = "coverage"
    sources = ("manifest",)

    def finish(self) -> Iterable[Finding]:
        ref = self.ctx.trigger
        path, span = span_of(n.manifest for n in self.ctx.nodes if n.manifest is not None)
        why = f"the {span:g} s before the trigger ({path or 'no fencing trigger: the longest fence path'})"
        for n in self.ctx.nodes:
            if n.manifest is None:
                yield Finding("coverage.no_archive", "warning", "capture",
                              f"{n.name}: no archive ({n.status}{': ' + n.error if n.error else ''}); "
                              f"nothing of {why} from it", n.name, None,
                              (Evidence("cluster.json", None, f"nodes.{n.name}.status: {n.status}"),))
                continue
            clocks = ClockMap.from_manifest(n.manifest, (n.clock_offset_ms or 0.0) / 1000)
            started = self.ctx.started(n.name)
            for h in history.of_manifest(n.manifest, ref, clocks, n.name):
                if h.kind == "kmsg" and started is not None and ref - started < span:
                    yield self._unjudged(n.name, h, ref - started, started, span, why)
                else:
                    yield self._one(n.name, h, span, why)

    def _unjudged(self, node: str, h: history.SourceHistory, ran: float, started: float, span: float,
                  why: str) -> Finding:
        """The kernel log of a recorder started within the span: older lines are context."""
        return Finding("coverage.short", "warning", "capture",
                       f"{node}/{h.name}: the recorder ran only {ran:.1f} s before the trigger; older "
                       f"kernel lines (the ring read at start) are kept but not judged: {why} is not all "
                       "analysed", node, started, (Evidence(h.name, started, "recorder started"),),
                       {"source": h.name, "kind": h.kind, "recorded_s": round(ran, 3), "span_s": span})

    def _one(self, node: str, h: history.SourceHistory, span: float, why: str) -> Finding:
        ev = (Evidence(h.name, h.first, h.line().splitlines()[0]),)
        facts: Dict[str, Optional[Any]] = {"source": h.name, "kind": h.kind, "reach_s": h.reach_s,
                                           "complete_s": h.complete_s, "span_s": span}
        if h.reach_s is None or h.reach_s < span:
            reach = "no records" if h.reach_s is None else f"reaches back {h.reach_s:.1f} s"
            return Finding("coverage.short", "warning", "capture",
                           f"{node}/{h.name} {reach}: it cannot show {why}", node, h.first, ev, facts)
        if h.complete_s is not None and h.complete_s < span and h.lost:
            return Finding("coverage.lost", "warning", "capture",
                           f"{node}/{h.name} lost records inside {why}: {h.lost}", node, h.first, ev, facts)
        return Finding("coverage.ok", "info", "capture",
                       f"{node}/{h.name} covers {why} ({h.reach_s:.1f} s kept)", node, h.first, ev, facts)


@hookimpl
def scoutfs_collect_register(register):
    register.add_analyzer(Coverage)
