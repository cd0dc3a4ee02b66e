"""One clock for every source: epoch seconds (UTC) of the node, aligned to the
coordinator's clock in a cluster bundle.

Each source stamps with its own clock: ftrace with the instance's trace clock (``boot``,
or ``mono``), the kernel log with microseconds since boot (``local_clock()``, which counts
like CLOCK_MONOTONIC), pcap files and the counter series with the realtime clock. The
manifest's ``times.clocks`` holds realtime, monotonic and boottime read back to back at
start and at the trigger; the reading at the trigger (nearest to the history that
matters) gives the offsets, the one at start stands in when the run never triggered.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional


def _num(value: Any) -> Optional[float]:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok else None


@dataclasses.dataclass(frozen=True)
class ClockMap:
    """Offsets that turn a node's clock readings into aligned epoch seconds.

    ``boot_offset``/``mono_offset``: realtime minus boottime/monotonic (seconds);
    ``node_offset``: the node's clock minus the coordinator's (cluster.json
    ``clock_offset_ms`` / 1000; 0 for a single archive), subtracted from every time.
    ``source`` says which manifest reading was used.
    """

    boot_offset: Optional[float]
    mono_offset: Optional[float]
    node_offset: float = 0.0
    source: str = "none"

    @classmethod
    def from_manifest(cls, manifest: Dict[str, Any], node_offset: float = 0.0) -> ClockMap:
        times = manifest.get("times")
        clocks = times.get("clocks") if isinstance(times, dict) else None
        clocks = clocks if isinstance(clocks, dict) else {}
        for key in ("trigger", "start"):
            reading = clocks.get(key)
            if not isinstance(reading, dict):
                continue
            real, mono, boot = (_num(reading.get(k)) for k in ("realtime", "monotonic", "boottime"))
            if real is None:
                continue
            return cls(None if boot is None else real - boot, None if mono is None else real - mono,
                       node_offset, f"times.clocks.{key}")
        return cls(None, None, node_offset)

    def realtime(self, t: float) -> float:
        """A realtime (epoch) reading of this node, aligned."""
        return t - self.node_offset

    def trace_clock_offset(self, trace_clock: Any, recorded: Any = None) -> Optional[float]:
        """Seconds to add to a ftrace timestamp of ``trace_clock`` for aligned epoch time;
        ``recorded`` (the ftrace plugin's ``clock_offset_s``) when the manifest has no
        reading of that clock; None when the clock cannot be converted."""
        own = {"boot": self.boot_offset, "mono": self.mono_offset}.get(str(trace_clock))
        if own is None:
            own = _num(recorded)
        return None if own is None else own - self.node_offset

    def kmsg_offset(self, details: Dict[str, Any]) -> Optional[float]:
        """Seconds to add to a kernel log record's since-boot seconds (``usec`` / 1e6):
        from the dmesg collector's clock probe (a line logged between two clock readings;
        the tightest of the last round), else the manifest's monotonic reading (the kernel log clock drifts
        from it by ~1 ms per half hour of uptime), else the collector's offset."""
        listed = details.get("clock_probes")
        probes = [p for p in listed if isinstance(p, dict) and _num(p.get("offset")) is not None
                  and _num(p.get("spread_us")) is not None] if isinstance(listed, list) else []
        # the tightest reading of the last round (stop, else start): its error is half its spread
        last = [p for p in probes if p.get("when") == probes[-1].get("when")] if probes else []
        best = min(last, key=lambda p: _num(p.get("spread_us")) or 0.0) if last else None
        own = _num(best.get("offset")) if best else None
        if own is None:
            own = self.mono_offset if self.mono_offset is not None else _num(details.get("epoch_offset"))
        return None if own is None else own - self.node_offset
