"""Analyzer ``counters``: scoutfs counters moving far faster just before the trigger."""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

from scoutfs_collect import Analyzer, Evidence, Finding, Record, hookimpl

RECENT = 2.0  # seconds before the trigger compared with everything before them
MIN_BASELINE = 1.0  # seconds of series before that, at least, to compare with
FACTOR = 5.0  # the recent rate stands out at 5x the earlier rate (or any, after none)
#: (finding key, category, counter name prefixes or parts, least recent increase)
WATCHED: Tuple[Tuple[str, str, Tuple[str, ...], int], ...] = (
    ("counters.lock", "lock", ("lock_shrink", "lock_invalidate"), 5),
    ("counters.net_errors", "network", ("net_send_error", "net_recv_error", "net_recv_dropped",
                                        "net_dropped", "net_recv_invalid"), 1),
)


def _watched(name: str) -> Optional[Tuple[str, str, int]]:
    for key, category, names, least in WATCHED:
        if name.startswith(names):
            return key, category, least
    return None


class Counters(Analyzer):
    """scoutfs counters whose rate in the 2 s before the trigger stands out against the
    rest of the run (the scoutfs-counters collector's counters-series.csv, one row per
    change): lock shrinks and invalidations (`counters.lock`: the lock traffic that
    stalls clients) and net send/receive errors and drops (`counters.net_errors`).
    Stands out: at least 5 times the rate from the recorder's start to those 2 s, or
    moving after not moving at all for at least 1 s; lock counters by 5 at least."""

    type_name = "counters"
    sources = ("counters",)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        # per (node, mount, counter): the sum of its changes before the last 2 s, and those
        # rows themselves (a days-long series is summed as it passes, not kept)
        self.before: Dict[Tuple[str, str, str], int] = {}
        self.changes: Dict[Tuple[str, str, str], List[Tuple[float, int, str]]] = {}
        self.start: Dict[str, Optional[float]] = {}

    def record(self, rec: Record) -> None:
        mount, name, change = rec.data
        if not change or _watched(name) is None:
            return
        if rec.node not in self.start:
            self.start[rec.node] = self.ctx.started(rec.node)
        start, key = self.start[rec.node], (rec.node, mount, name)
        if start is None or rec.time < start or rec.time > self.ctx.trigger:
            return
        if rec.time <= self.ctx.trigger - RECENT:
            self.before[key] = self.before.get(key, 0) + change
        else:
            self.changes.setdefault(key, []).append((rec.time, change, rec.source))

    def finish(self) -> Iterable[Finding]:
        trig = self.ctx.trigger
        cut = trig - RECENT
        best: Dict[Tuple[str, str], Tuple[float, Finding]] = {}
        for (node, mount, name), changes in self.changes.items():
            start = self.start.get(node)
            if start is None or cut - start < MIN_BASELINE:
                continue  # too short a run to compare with
            key, category, least = _watched(name) or ("", "", 0)
            before = self.before.get((node, mount, name), 0)
            recent_rows = sorted(changes)
            recent = sum(c for _, c, _ in recent_rows)
            base, rate = before / (cut - start), recent / RECENT
            if recent < least or (base > 0 and rate < FACTOR * base):
                continue
            first = recent_rows[0]
            earlier = "not moving before" if base == 0 else f"{base:.1f}/s before"
            f = Finding(key, "warning", category,
                        f"{name} +{recent} in the {RECENT:g} s before the trigger ({earlier}) on {mount}",
                        node, first[0],
                        tuple(Evidence(s, t, f"{name} +{c}  ({mount})") for t, c, s in recent_rows[-3:]),
                        {"counter": name, "mount": mount, "recent": recent, "baseline_per_s": round(base, 3)})
            score = rate / base if base else float("inf")
            if (node, key) not in best or score > best[(node, key)][0]:
                best[(node, key)] = (score, f)
        for _score, f in best.values():
            yield f


@hookimpl
def scoutfs_collect_register(register):
    register.add_analyzer(Counters)
