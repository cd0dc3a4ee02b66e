"""One streaming pass over an archive: every source's records are read from the tar
members as they come (never unpacked, never held in memory), counted into the source's
history and density, and those inside the timeline window are spooled to a temporary
file per member, in time order (:mod:`.spool`), for :mod:`.timeline` to merge."""

from __future__ import annotations

import collections
import dataclasses
import math
import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

from scoutfs_collect.analysis import ftrace_fallback, sources, spool
from scoutfs_collect.analysis.clocks import ClockMap
from scoutfs_collect.archive import read as archive_read

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
class TextSpool:
    """Spool lines already in the form ``inspect --timeline`` prints: UTC with
    microseconds, seconds from the trigger, the source label padded to ``width`` (at
    least the widest label of the archive), the text. Both times come from one integer
    count of microseconds, so lines merged as plain strings are in time order and are
    written out as they are, without being parsed again."""

    width: int = 0


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

    def merge(self, other: SourceStats) -> None:
        """Add what another process counted of this source (:func:`scan_split`)."""
        tally = spool.Tally(other.count, other.in_window, _or(other.first, math.inf),
                            _or(other.last, -math.inf), other.fine, other.coarse)
        self.absorb(tally)

    def absorb(self, tally: spool.Tally) -> None:
        """Add what one member of this source held."""
        if tally.count:
            self.first = tally.first if self.first is None else min(self.first, tally.first)
            self.last = tally.last if self.last is None else max(self.last, tally.last)
        self.count += tally.count
        self.in_window += tally.inside
        for mine, theirs in ((self.fine, tally.fine), (self.coarse, tally.coarse)):
            for k, n in theirs.items():
                mine[k] = mine.get(k, 0) + n


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
    text: Optional[TextSpool] = None  # the spools hold rendered lines (else TIME\tNODE\tSOURCE\tTEXT)
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


def label_width(node: str, chosen: Sequence[sources.SourceSpec]) -> int:
    """The width of the widest source label (``node/source`` in a bundle), at least 6."""
    return max([len(f"{node}/{s.name}" if node else s.name) for s in chosen] + [6])


def scan(archive: Path, spool_dir: Path, window_of, node: str = "", node_offset: float = 0.0,
         wanted: Optional[Sequence[str]] = None, counters: bool = False,
         text: Optional[TextSpool] = None, only: Optional[Set[str]] = None,
         share: Optional[Split] = None, feed: Any = None, lines: bool = True) -> NodeScan:
    """Read ``archive`` once. ``window_of(manifest, clocks)`` gives the :class:`Window`
    (it is known only once the manifest, the first member, has been read). ``counters``
    (the report): also keep each counter's values and every source's density. ``text``:
    spool rendered lines (see :class:`TextSpool`) instead of data lines. ``only``: read
    just the sources of these instance names (of those ``wanted`` selects); ``share``:
    just this process's part of the text traces and packet files (:func:`scan_split`).
    ``feed``: the analyzers' :class:`~.findings.Feed`, handed the records as they pass;
    ``lines=False``: only the feed reads the records (no spools, no source stats)."""
    with archive_read.open_stream(archive) as tar:
        manifest: Optional[Dict[str, Any]] = None
        result: Optional[NodeScan] = None
        window: Optional[Window] = None
        by_dir: Dict[str, sources.SourceSpec] = {}
        needed: Optional[Set[Tuple[str, str]]] = None
        for member in tar:
            parts = member.name.strip("/").split("/")
            if manifest is None:
                if archive_read.is_manifest(member):
                    manifest = archive_read.parse_manifest(archive, member, tar.extractfile(member))
                    clocks = ClockMap.from_manifest(manifest, node_offset)
                    chosen = select(sources.specs(manifest, clocks), wanted)
                    if only is not None:
                        chosen = [s for s in chosen if s.name in only]
                    by_dir = {s.name: s for s in chosen}
                    window = window_of(manifest, clocks)
                    stats = {s.name: SourceStats(node, s.name, s.kind) for s in chosen}
                    if text is not None:
                        text = TextSpool(max(text.width, label_width(node, chosen)))
                    result = NodeScan(node, Path(archive), manifest, clocks, chosen, stats, [], {},
                                      text)
                    fallback = ftrace_fallback.Fallback(archive, manifest, chosen, spool_dir,
                                                        copies=share is None or not share.is_child)
                    needed = _child_members(manifest, by_dir, share)
                    if feed is not None:
                        feed.begin(node, manifest, clocks, window.ref)
                    if needed is not None and not needed:
                        break
                continue
            if fallback.take(parts, member, tar):  # trace.dat or raw/ copied: no (finished) trace.txt
                continue
            if feed is not None and feed.take(node, parts, member, tar):  # sysinfo snapshots
                continue
            if len(parts) != 3 or not member.isfile() or parts[1] not in by_dir:
                continue
            spec = by_dir[parts[1]]
            if not spec.wants(parts[2]):
                continue
            if spec.kind == "packets" and share is not None and not share.reads(spec.name, parts[2]):
                continue
            assert result is not None and window is not None
            stream = tar.extractfile(member)
            assert stream is not None
            frames = None
            if feed is not None:  # the analyzers' frames of a pcap file (see Feed.member)
                stream, frames = feed.member(node, spec, parts[2], stream)
            if not lines and feed is not None and frames is None and spec.kind == "packets":
                _drain(stream)  # a ring file that came early: the feed replays its copy in turn
                feed.member_done(node, spec, parts[2], stream)
                continue
            sink = _counter_sink(result.counters) if counters and spec.kind == "counters" else None
            records = sources.read(spec, stream, (window.start, window.end), sink,
                                   share.blocks if share is not None else None, frames)
            if feed is not None:
                records = feed.tap(node, spec, records)
            if lines:
                path = spool_dir / f"{len(os.listdir(spool_dir)):05d}.spool"
                stats = result.stats[spec.name]
                tag = f"\t{node}\t{spec.name}\t" if text is None else f"{stats.label:<{text.width}}"
                fmt = spool.LineFormat(window.start, window.end, window.ref, tag, text is not None, counters)
                stats.absorb(spool.spool(records, fmt, path))
                result.spools.append((spec.name, path))
            else:
                collections.deque(records, maxlen=0)  # the feed's pass alone, at C speed
            if feed is not None:
                feed.member_done(node, spec, parts[2], stream)
            if needed is not None:
                needed.discard((spec.name, parts[2]))
                if not needed:  # the child's part is read: no need to decompress the rest
                    break
    if result is None:
        raise ValueError(f"{archive}: not a scoutfs-collect archive (no TOP/manifest.json)")
    if feed is not None:
        feed.end(node)
    fallback.finish(result, window, counters)  # ftrace events of a directory without trace.txt
    return result


def _drain(stream: Any) -> None:
    while stream.read(sources.CHUNK):
        pass


def _child_members(manifest: Dict[str, Any], by_dir: Dict[str, sources.SourceSpec],
                   share: Optional[Split]) -> Optional[Set[Tuple[str, str]]]:
    """The (source, file) members the second reader of :func:`scan_split` spools, from
    the manifest (it stops once it has them all); None for any other reader."""
    if share is None or not share.is_child:
        return None
    files = _shared_files(manifest, set(by_dir))
    return {(n, p) for n, p, _ in files if p == "trace.txt" or (n, p) in share.child_files}


def _counter_sink(store: Dict[Tuple[str, str], CounterSeries]):
    def sink(t: float, mount: str, name: str, value: int) -> None:
        series = store.get((mount, name))
        if series is None:
            series = store[(mount, name)] = CounterSeries(mount, name)
        series.add(t, value)
    return sink


@dataclasses.dataclass(frozen=True)
class Split:
    """One process's part when two read an archive (:func:`scan_split`): these blocks
    of each text trace; the pcap files in ``child_files`` ((source, file) pairs) are
    the child's, every other one the parent's."""

    blocks: sources.Share
    child_files: FrozenSet[Tuple[str, str]]
    is_child: bool

    def reads(self, source: str, file: str) -> bool:
        return ((source, file) in self.child_files) == self.is_child


SPLIT_ABOVE = 4 << 20  # bytes of text trace and pcap above which scan_split forks a reader
TRACE_BLOCKS = 3  # of every 3 blocks of a text trace, the parent formats 1, the child 2
PCAP_COST = 0.1  # CPU per byte of pcap, relative to a byte of text trace (measured: ~0.08)


def plan_split(manifest: Dict[str, Any], shared: Set[str]) -> Tuple[Split, Split]:
    """The parent's and the child's parts: the text traces by blocks, then each pcap file
    (in archive order) to whichever has less work so far, by the sizes in the manifest."""
    files = _shared_files(manifest, shared)
    trace = sum(size for _, path, size in files if path == "trace.txt")
    load = {False: trace / TRACE_BLOCKS, True: trace * (TRACE_BLOCKS - 1) / TRACE_BLOCKS}
    child = set()
    for source, path, size in sorted(files):
        if path == "trace.txt":
            continue
        to_child = load[True] < load[False]
        load[to_child] += size * PCAP_COST
        if to_child:
            child.add((source, path))
    mine = sources.Share(TRACE_BLOCKS, frozenset([0]))
    theirs = sources.Share(TRACE_BLOCKS, frozenset(range(1, TRACE_BLOCKS)))
    return Split(mine, frozenset(child), False), Split(theirs, frozenset(child), True)


def scan_split(archive: Path, spool_dir: Path, window_of, node: str = "", node_offset: float = 0.0,
               wanted: Optional[Sequence[str]] = None, counters: bool = False,
               text: Optional[TextSpool] = None, feed: Any = None, lines: bool = True) -> NodeScan:
    """:func:`scan` on two CPUs, when the archive's text traces and pcap files hold more
    than SPLIT_ABOVE bytes (a full ring's trace is most of a timeline's lines, and one
    CPython process formats ~0.4 M lines/s): a forked child reads a second stream of the
    archive for 2 of every 3 blocks of each text trace and every other pcap file, into
    its own spools, while this process reads the rest and every other source. Each
    spool is still in time order, so the merge is unchanged. Costs a second
    decompression (zstd: ~0.1 s of CPU per 200 MiB); the child ends with this call.
    ``feed`` (the analyzers): read by this process alone, so not split when it wants
    ftrace or packet records (every other source is this process's anyway)."""
    manifest = archive_read.read_manifest(archive)
    chosen = select(sources.specs(manifest, ClockMap.from_manifest(manifest, node_offset)), wanted)
    if text is not None:  # one width for both processes' lines
        text = TextSpool(max(text.width, label_width(node, chosen)))
    shared = {s.name for s in chosen if s.kind in ("ftrace", "packets") and s.offset is not None}
    alone = not lines or not shared or (os.cpu_count() or 1) < 2
    if alone or (feed is not None and feed.wants_split_kinds()) or \
            sum(size for _, _, size in _shared_files(manifest, shared)) <= SPLIT_ABOVE:
        return scan(archive, spool_dir, window_of, node, node_offset, wanted, counters, text, feed=feed,
                    lines=lines)
    parent_part, child_part = plan_split(manifest, shared)
    child_dir = Path(tempfile.mkdtemp(prefix="shared.", dir=spool_dir))
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe(duplex=False)
    child = context.Process(
        target=_scan_child, name="scoutfs-collect-archive-reader", daemon=True,
        args=(theirs, archive, child_dir, window_of, node, node_offset, wanted, counters, text,
              shared, child_part))
    child.start()
    theirs.close()
    try:
        result = scan(archive, spool_dir, window_of, node, node_offset, wanted, counters, text,
                      None, parent_part, feed)
        try:
            status, payload = ours.recv()
        except EOFError:
            raise RuntimeError(f"{archive}: the second reader died (exit status {child.exitcode})") from None
        if status != "ok":
            raise ValueError(payload) if status == "ValueError" else RuntimeError(payload)
    finally:
        ours.close()
        if child.is_alive():
            child.terminate()
        child.join()
    part: NodeScan = payload
    for name, stats in part.stats.items():
        result.stats[name].merge(stats)
    result.spools += part.spools
    return result


def _scan_child(conn, archive: Path, *args: Any) -> None:
    try:
        conn.send(("ok", scan(archive, *args)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send((type(exc).__name__, str(exc) or type(exc).__name__))
    finally:
        conn.close()


def _shared_files(manifest: Dict[str, Any], names: Set[str]) -> List[Tuple[str, str, int]]:
    """``(source, file, size)`` of the text traces and pcap files of the sources
    ``names``, from the manifest."""
    out = []
    plugins = manifest.get("plugins") if isinstance(manifest.get("plugins"), dict) else {}
    for name, plugin in plugins.items():
        if name not in names or not isinstance(plugin, dict):
            continue
        for f in plugin.get("files") or []:
            path = str(f.get("path")) if isinstance(f, dict) else ""
            if (path == "trace.txt" or path.startswith("tcpdump.pcap")) and isinstance(f.get("size"), int):
                out.append((name, path, f["size"]))
    return out


def _or(value: Optional[float], default: float) -> float:
    return default if value is None else value
