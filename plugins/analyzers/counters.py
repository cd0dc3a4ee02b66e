"""Analyzer ``counters``: scoutfs counters moving far faster just before the trigger."""

from __future__ import annotations

import bisect
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
    rest of the series (the scoutfs-counters collector's counters-series.csv): lock
    shrinks and invalidations (`counters.lock`: the lock traffic that stalls clients)
    and net send/receive errors and drops (`counters.net_errors`). Stands out: at least
    5 times the earlier rate, or moving after not moving at all for at least 1 s."""

    type_name = "counters"
    sources = ("counters",)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.points: Dict[Tuple[str, str, str], List[Tuple[float, int, str]]] = {}

    def record(self, rec: Record) -> None:
        mount, name, value = rec.data
        if _watched(name) is not None:
            self.points.setdefault((rec.node, mount, name), []).append((rec.time, value, rec.source))

    def finish(self) -> Iterable[Finding]:
        trig = self.ctx.trigger
        best: Dict[Tuple[str, str], Tuple[float, Finding]] = {}
        for (node, mount, name), pts in self.points.items():
            pts.sort()
            pts = [p for p in pts if p[0] <= trig]
            if len(pts) < 2 or trig - RECENT - pts[0][0] < MIN_BASELINE:
                continue
            key, category, least = _watched(name) or ("", "", 0)
            cut = _value_at(pts, trig - RECENT)
            base = (cut - pts[0][1]) / (trig - RECENT - pts[0][0])
            recent = pts[-1][1] - cut
            rate = recent / RECENT
            if recent < least or (base > 0 and rate < FACTOR * base):
                continue
            t = next(p[0] for p in pts if p[0] > trig - RECENT)
            earlier = "not moving before" if base == 0 else f"{base:.1f}/s before"
            f = Finding(key, "warning", category,
                        f"{name} +{recent} in the {RECENT:g} s before the trigger ({earlier}) on {mount}",
                        node, t, (Evidence(pts[-1][2], pts[-1][0], f"{name} = {pts[-1][1]}  ({mount})"),),
                        {"counter": name, "mount": mount, "recent": recent, "baseline_per_s": round(base, 3)})
            score = rate / base if base else float("inf")
            if (node, key) not in best or score > best[(node, key)][0]:
                best[(node, key)] = (score, f)
        for _score, f in best.values():
            yield f


def _value_at(pts: List[Tuple[float, int, str]], t: float) -> int:
    i = bisect.bisect_right([p[0] for p in pts], t)
    return pts[max(i - 1, 0)][1]


@hookimpl
def scoutfs_collect_register(register):
    register.add_analyzer(Counters)
