"""One streaming pass over an archive: every source's records are read from the tar
members as they come (never unpacked, never held in memory), counted into the source's
history and density, and those inside the timeline window are spooled to a temporary
file per member, in time order, for :mod:`.timeline` to merge."""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import os
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from scoutfs_collect.analysis import ftrace_fallback, sources
from scoutfs_collect.analysis.clocks import ClockMap
from scoutfs_collect.archive import read as archive_read

FINE = 0.01  # density buckets: 10 ms from FINE_BEFORE s before the trigger to FINE_AFTER after
FINE_BEFORE, FINE_AFTER = 20.0, 5.0
COUNTER_POINTS = 512  # points kept per counter for the report (decimated beyond)


@dataclasses.dataclass
class Window:
    """The timeline's span in aligned epoch seconds around ``ref`` (the trigger)."""

    ref: float
    before: float = 2.0
    after: float = 0.1

    @property
    def start(self) -> float:
        return self.ref - self.before

    @property
    def end(self) -> float:
        return self.ref + self.after


@dataclasses.dataclass
class SourceStats:
    """What one source of one node holds: its records' span and density (all records,
    not only the window's)."""

    node: str
    name: str
    kind: str
    first: Optional[float] = None
    last: Optional[float] = None
    count: int = 0
    in_window: int = 0
    fine: Dict[int, int] = dataclasses.field(default_factory=dict)  # 10 ms bucket -> records
    coarse: Dict[int, int] = dataclasses.field(default_factory=dict)  # 1 s bucket -> records

    @property
    def label(self) -> str:
        return f"{self.node}/{self.name}" if self.node else self.name


@dataclasses.dataclass
class CounterSeries:
    """One counter's values over the run (decimated to at most COUNTER_POINTS)."""

    mount: str
    name: str
    points: List[Tuple[float, int]] = dataclasses.field(default_factory=list)
    stride: int = 1
    seen: int = 0

    def add(self, t: float, value: int) -> None:
        self.seen += 1
        if (self.seen - 1) % self.stride:
            return
        self.points.append((t, value))
        if len(self.points) > COUNTER_POINTS:
            self.points = self.points[::2]
            self.stride *= 2


@dataclasses.dataclass
class NodeScan:
    """The result of scanning one archive (one node of a bundle, or the archive itself)."""

    node: str
    archive: Path
    manifest: Dict[str, Any]
    clocks: ClockMap
    specs: List[sources.SourceSpec]
    stats: Dict[str, SourceStats]
    spools: List[Tuple[str, Path]]  # (source name, spool file), each in time order
    counters: Dict[Tuple[str, str], CounterSeries]
    ftrace_from: Dict[str, ftrace_fallback.Origin] = dataclasses.field(default_factory=dict)

    def aligned(self, t: Any) -> Optional[float]:
        """A realtime reading of the manifest (trigger, stop), on the aligned clock."""
        ok = isinstance(t, (int, float)) and not isinstance(t, bool)
        return self.clocks.realtime(float(t)) if ok else None


def reference_time(manifest: Dict[str, Any]) -> Optional[float]:
    """The archive's own trigger time (realtime), else its stop, else its end."""
    trig = manifest.get("trigger")
    times = manifest.get("times") if isinstance(manifest.get("times"), dict) else {}
    for t in ((trig or {}).get("time") if isinstance(trig, dict) else None,
              times.get("stopped"), times.get("finished")):
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            return float(t)
    return None


def select(specs: Sequence[sources.SourceSpec], wanted: Optional[Sequence[str]]) -> List[sources.SourceSpec]:
    """The specs named (by kind or instance name) in ``wanted``; all when None."""
    if not wanted:
        return list(specs)
    return [s for s in specs if s.kind in wanted or s.name in wanted]


def scan(archive: Path, spool_dir: Path, window_of, node: str = "", node_offset: float = 0.0,
         wanted: Optional[Sequence[str]] = None, counters: bool = False) -> NodeScan:
    """Read ``archive`` once. ``window_of(manifest, clocks)`` gives the :class:`Window`
    (it is known only once the manifest, the first member, has been read). ``counters``
    (the report): also keep each counter's values and every source's density."""
    with archive_read.open_stream(archive) as tar:
        manifest: Optional[Dict[str, Any]] = None
        result: Optional[NodeScan] = None
        window: Optional[Window] = None
        by_dir: Dict[str, sources.SourceSpec] = {}
        for member in tar:
            parts = member.name.strip("/").split("/")
            if manifest is None:
                if len(parts) == 2 and parts[1] == "manifest.json" and member.isfile():
                    manifest = _manifest(archive, tar.extractfile(member))
                    clocks = ClockMap.from_manifest(manifest, node_offset)
                    chosen = select(sources.specs(manifest, clocks), wanted)
                    by_dir = {s.name: s for s in chosen}
                    window = window_of(manifest, clocks)
                    stats = {s.name: SourceStats(node, s.name, s.kind) for s in chosen}
                    result = NodeScan(node, Path(archive), manifest, clocks, chosen, stats, [], {})
                    fallback = ftrace_fallback.Fallback(archive, manifest, chosen, spool_dir)
                continue
            if fallback.take(parts, member, tar):  # trace.dat or raw/ copied: no trace.txt
                continue
            if len(parts) != 3 or not member.isfile() or parts[1] not in by_dir:
                continue
            spec = by_dir[parts[1]]
            if not spec.wants(parts[2]):
                continue
            assert result is not None and window is not None
            stream = tar.extractfile(member)
            assert stream is not None
            sink = _counter_sink(result.counters) if counters and spec.kind == "counters" else None
            path = spool_dir / f"{len(os.listdir(spool_dir)):05d}.spool"
            records = sources.read(spec, stream, (window.start, window.end), sink)
            _spool(records, result.stats[spec.name], window, path, counters, f"\t{node}\t{spec.name}\t")
            result.spools.append((spec.name, path))
    if result is None:
        raise ValueError(f"{archive}: not a scoutfs-collect archive (no TOP/manifest.json)")
    fallback.finish(result, window, counters, _spool)  # ftrace events of a directory without trace.txt
    return result


def _manifest(archive: Path, f: Optional[IO[bytes]]) -> Dict[str, Any]:
    try:
        data = json.loads(f.read() if f else b"")
    except ValueError as exc:
        raise ValueError(f"{archive}: manifest.json is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or "format" not in data:
        raise ValueError(f"{archive}: manifest.json is not a scoutfs-collect manifest")
    return data


def _counter_sink(store: Dict[Tuple[str, str], CounterSeries]):
    def sink(t: float, mount: str, name: str, value: int) -> None:
        series = store.get((mount, name))
        if series is None:
            series = store[(mount, name)] = CounterSeries(mount, name)
        series.add(t, value)
    return sink


def _spool(records: Iterator[sources.TimedText], stats: SourceStats, window: Window, path: Path,
           density: bool, tag: str) -> None:
    """Count every record into ``stats``; write those in the window as spool lines:
    ``TIME<tab>NODE<tab>SOURCE<tab>TEXT``, TIME fixed-width (``%018.6f``) so that the
    lines of several spools merge in time order as plain strings."""
    start, end, ref = window.start, window.end, window.ref
    fine_lo, fine_hi = ref - FINE_BEFORE, ref + FINE_AFTER
    fine, coarse = stats.fine, stats.coarse
    first, last, count, inside = math.inf, -math.inf, 0, 0
    held: List[str] = []
    with open(path, "w", encoding="utf-8") as out:
        for t, text in records:
            count += 1
            if t < first:
                first = t
            if t > last:
                last = t
            if density:
                if fine_lo <= t < fine_hi:
                    k = int((t - ref) // FINE)
                    fine[k] = fine.get(k, 0) + 1
                else:
                    k = int((t - ref) // 1)
                    coarse[k] = coarse.get(k, 0) + 1
            if start <= t <= end:
                inside += 1
                if "\t" in text or "\n" in text:
                    text = text.replace("\t", " ").replace("\n", " ")
                held.append(f"{t:018.6f}{tag}{text}\n")
                if len(held) >= 4096:
                    out.writelines(held)
                    held = []
        out.writelines(held)
    if count:
        stats.first = first if stats.first is None else min(stats.first, first)
        stats.last = last if stats.last is None else max(stats.last, last)
    stats.count += count
    stats.in_window += inside


def merged(paths: Sequence[Path]) -> Iterator[str]:
    """The spool lines of ``paths`` merged in time order (string order of the
    fixed-width time prefix), newline kept."""
    files = [open(p, encoding="utf-8") for p in paths]
    try:
        yield from heapq.merge(*files)
    finally:
        for f in files:
            f.close()
