"""Analyzer ``memory``: low available memory in the sysinfo snapshots."""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

from scoutfs_collect import Analyzer, Evidence, Finding, Record, hookimpl, human_bytes

LOW_FRACTION = 0.05  # MemAvailable below 5 % of MemTotal ...
LOW_BYTES = 256 << 20  # ... or below 256 MiB is low
SWAP_FULL = 90.0  # % of swap in use: the node is paging hard


class Memory(Analyzer):
    """Low memory on a node, from the sysinfo collector's snapshots at start and at
    stop (psutil's `available`, the kernel's MemAvailable): `memory.low` when it is
    under 5 % of the total or under 256 MiB, `memory.swap_full` when over 90 % of swap
    is in use. The stop snapshot is taken the instant the trigger fires: the state
    the node was in at the fence."""

    type_name = "memory"
    sources = ("sysinfo",)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.snaps: List[Tuple[Record, Dict]] = []

    def record(self, rec: Record) -> None:
        mem = rec.data.get("memory") if isinstance(rec.data, dict) else None
        if isinstance(mem, dict) and isinstance(mem.get("virtual"), dict):
            self.snaps.append((rec, mem))

    def finish(self) -> Iterable[Finding]:
        worst: Dict[Tuple[str, str], Tuple[Record, str, str]] = {}
        for rec, mem in sorted(self.snaps, key=lambda s: s[0].time):
            low = _low(mem["virtual"])
            if low:
                worst.setdefault(("memory.low", rec.node), (rec, low, "warning"))
            swap = mem.get("swap") if isinstance(mem.get("swap"), dict) else {}
            pct = swap.get("percent")
            if isinstance(pct, (int, float)) and swap.get("total") and pct >= SWAP_FULL:
                full = (rec, f"{pct:.0f} % of swap in use", "warning")
                worst.setdefault(("memory.swap_full", rec.node), full)
        for (key, node), (rec, text, severity) in worst.items():
            yield Finding(key, severity, "memory", f"{text} ({rec.text} snapshot)", node, rec.time,
                          (Evidence(rec.source, rec.time, f"{rec.text}: {text}"),))


def _low(virtual: Dict) -> Optional[str]:
    avail, total = virtual.get("available"), virtual.get("total")
    if not isinstance(avail, int) or not isinstance(total, int) or total <= 0:
        return None
    if avail < LOW_FRACTION * total or avail < LOW_BYTES:
        return f"low MemAvailable: {human_bytes(avail)} of {human_bytes(total)}"
    return None


@hookimpl
def scoutfs_collect_register(register):
    register.add_analyzer(Memory)
