"""The merged timeline of an archive or a cluster bundle: every source's records in the
window around the trigger, on one clock, in order (``heapq.merge`` over the per-member
spools of :mod:`.scan`: memory stays flat whatever the archive's size)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, TextIO

from scoutfs_collect.analysis import history, scan, sources, spool
from scoutfs_collect.analysis.bundle import Bundle, open_bundle
from scoutfs_collect.analysis.clocks import ClockMap
from scoutfs_collect.analysis.lines import Printer, micros, utc_us
from scoutfs_collect.archive import read as archive_read
from scoutfs_collect.system import heap
from scoutfs_collect.system.kernel_text import escape_controls_in_lines


class Event(NamedTuple):
    """One timeline line: aligned epoch ``time``, ``node`` ("" in a single archive),
    ``source`` (plugin instance name) and its text."""

    time: float
    node: str
    source: str
    text: str

    @property
    def label(self) -> str:
        return f"{self.node}/{self.source}" if self.node else self.source

    @classmethod
    def parse(cls, line: str) -> Event:
        """The event of one data spool line (``TIME<tab>NODE<tab>SOURCE<tab>TEXT``)."""
        t, node, source, text = line[:-1].split("\t", 3)
        return cls(float(t), node, source, text)

    @property
    def us(self) -> int:
        """``time`` in the integer microseconds a line prints (:func:`.lines.micros`)."""
        return micros(self.time)


@dataclasses.dataclass
class Analysis:
    """An archive or bundle scanned once: per node its manifest, clocks, source stats and
    spools; the window; the bundle's cluster.json when it is one. Close it (or use it
    as a context manager) to remove the spools."""

    path: Path
    window: scan.Window
    nodes: List[scan.NodeScan]
    bundle: Optional[Bundle]
    tmp: Any  # the TemporaryDirectory holding spools and copied node archives

    def __enter__(self) -> Analysis:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.tmp.cleanup()

    def lines(self) -> Iterator[str]:
        """The spool lines (``TIME\tNODE\tSOURCE\tTEXT\n``) of every node and source,
        merged in time order."""
        return spool.merged([p for n in self.nodes for _, p in n.spools])

    @property
    def rendered(self) -> bool:
        """Whether the spools hold printed lines (``analyse(text=True)``)."""
        return any(n.text is not None for n in self.nodes)

    def events(self) -> Iterator[Event]:
        """Every spooled record of every node and source, merged in time order."""
        if self.rendered:
            raise TypeError("events() of an analysis made with text=True")
        parse = Event.parse
        for line in self.lines():
            yield parse(line)

    def history(self) -> List[history.SourceHistory]:
        out = []
        for n in self.nodes:
            out += history.of_manifest(n.manifest, self.window.ref, n.clocks, n.node, n.ftrace_from)
        return out

    def stats(self) -> List[scan.SourceStats]:
        return [s for n in self.nodes for s in n.stats.values()]


def _parse_sources(text: Optional[str]) -> Optional[List[str]]:
    if not text:
        return None
    return [s.strip() for s in text.split(",") if s.strip()]


@dataclasses.dataclass(frozen=True)
class Input:
    """An archive or bundle opened once for several passes over it (the report's timeline
    and its findings): a bundle's node archives are copied out once; ``bundle`` is None
    for a single archive."""

    path: Path
    bundle: Optional[Bundle]


@contextlib.contextmanager
def open_input(path: Path) -> Iterator[Input]:
    """:class:`Input` of ``path``; a bundle's copies are removed on exit. Raises
    ValueError naming the file and key when a bundle's cluster.json is unusable."""
    with tempfile.TemporaryDirectory(prefix="scoutfs-collect-input.") as copies:
        yield Input(Path(path), open_bundle(path, Path(copies)))


def analyse(path: Path, before: float = 2.0, after: float = 0.1, wanted: Optional[str] = None,
            counters: bool = False, text: bool = False, feed: Any = None, lines: bool = True,
            opened: Optional[Input] = None) -> Analysis:
    """Scan ``path`` (an archive or a bundle). ``wanted``: comma-separated source kinds
    (kmsg, ftrace, packets, counters) or plugin instance names. ``text``: the analysis is
    only for :func:`render` (its spools hold the printed lines; :meth:`Analysis.events`
    is then not available). ``feed``: the analyzers' :class:`~.findings.Feed`, handed
    every record on the way; ``lines=False``: for the feed alone (no lines, no source
    stats); ``opened``: ``path`` as :func:`open_input` opened it (else it is opened here).
    Raises ValueError with a one-line message for bad input."""
    if before < 0 or after < 0:
        raise ValueError("--before and --after must be 0 or more seconds")
    names = _parse_sources(wanted)
    heap.keep_freed_memory()  # 1 MiB reads without a page fault each
    tmp = tempfile.TemporaryDirectory(prefix="scoutfs-collect-analysis.")
    try:
        root = Path(tmp.name)
        (root / "spool").mkdir()
        bundle = opened.bundle if opened is not None else open_bundle(path, root)
        archives = [(None, Path(path), 0.0)] if bundle is None else \
            [(n, n.archive, n.clock_offset_ms / 1000) for n in bundle.nodes if n.archive is not None]
        ref = bundle.reference() if bundle is not None else None
        if feed is not None:
            feed.open(bundle)
        holder: Dict[str, scan.Window] = {}

        def window_of(manifest: Dict[str, Any], clocks: ClockMap) -> scan.Window:
            if "w" not in holder:
                own = scan.reference_time(manifest)
                r = ref if ref is not None else (clocks.realtime(own) if own is not None else time.time())
                holder["w"] = scan.Window(r, before, after)
            return holder["w"]

        text_spool = scan.TextSpool(_bundle_label_width(archives, names)) if text else None
        nodes = []
        for node, archive, offset in archives:
            nodes.append(scan.scan_split(archive, root / "spool", window_of, node.name if node else "",
                                         offset, names, counters, text_spool, feed, lines))
        if names:
            known = {s.kind for n in nodes for s in sources.specs(n.manifest, n.clocks)}
            known |= {s.name for n in nodes for s in sources.specs(n.manifest, n.clocks)}
            unknown = [s for s in names if s not in known and s not in sources.KINDS]
            if unknown:
                raise ValueError(f"--sources: unknown source {unknown[0]!r} (this archive has: "
                                 f"{', '.join(sorted(known)) or 'none'})")
        if not nodes:
            raise ValueError(f"{path}: the bundle holds no node archive")
        return Analysis(Path(path), holder["w"], nodes, bundle, tmp)
    except BaseException:
        tmp.cleanup()
        raise


def _bundle_label_width(archives: List[Any], names: Optional[List[str]]) -> int:
    """The widest ``node/source`` label of a bundle's nodes (from their manifests, read
    before any scan: every node's lines are spooled at one width); 0 for an archive."""
    width = 0
    for node, archive, offset in archives:
        if node is None:
            continue
        manifest = archive_read.read_manifest(archive)
        chosen = scan.select(sources.specs(manifest, ClockMap.from_manifest(manifest, offset)), names)
        width = max(width, scan.label_width(node.name, chosen))
    return width


# ---------------------------------------------------------------- output


def render(a: Analysis, out: TextIO) -> int:
    """The human timeline; returns the number of event lines written. Its head too holds
    no control character (a bundle's origin reason is a kernel line; names are escaped)."""
    w = a.window
    head = [f"Timeline of {a.path.name}: {utc_us(w.start)} .. {utc_us(w.end)} "
            f"({w.before:g} s before the trigger to {w.after:g} s after)",
            f"trigger at {utc_us(w.ref)}; times UTC, then seconds relative to the trigger"]
    if a.bundle is not None:
        head += a.bundle.header_lines()
    for n in a.nodes:
        where = f"{n.node}: " if n.node else ""
        head.append(f"  {where}clocks from manifest {n.clocks.source}"
                    + (f", node clock offset {n.clocks.node_offset * 1000:+.3f} ms" if n.node else ""))
    head += ["", "History kept"]
    head += [f"  {(h.node + '/' if h.node else '') + h.name:<24} {h.line()}" for h in a.history()]
    out.write(escape_controls_in_lines("\n".join(head) + "\n\n"))
    if a.rendered:
        spool.write_merged([p for n in a.nodes for _, p in n.spools], out)
        count = sum(s.in_window for s in a.stats())
    else:
        count = _render_events(a, out)
    if count == 0:
        out.write("(no records in the window)\n")
    return count


def _render_events(a: Analysis, out: TextIO) -> int:
    """The event lines of a data-spooled analysis, as :class:`scan.TextSpool` has them."""
    width = max([len(s.label) for s in a.stats()] + [6])
    line = Printer(a.window.ref).line
    count, held = 0, []
    for e in a.events():
        held.append(line(e.us, f"{e.label:<{width}}", e.text))
        if len(held) >= 4096:
            out.writelines(held)
            count += len(held)
            held = []
    out.writelines(held)
    return count + len(held)


def event_dict(e: Event, printer: Printer) -> Dict[str, Any]:
    """One event of ``--json``: its times as the timeline lines print them."""
    us = e.us
    return {"time": us / 1e6, "utc": printer.utc(us), "rel": printer.rel(us),
            "node": e.node, "source": e.source, "text": e.text}


def write_json(a: Analysis, out: TextIO) -> None:
    """The timeline as one JSON document, events streamed one per line."""
    w = a.window
    head = {
        "input": str(a.path),
        "bundle": a.bundle is not None,
        "trigger": {"time": w.ref, "utc": utc_us(w.ref)},
        "window": {"before": w.before, "after": w.after, "start": w.start, "end": w.end},
        "clocks": {n.node or "": dataclasses.asdict(n.clocks) for n in a.nodes},
        "history": [h.as_dict() for h in a.history()],
        "sources": [{"node": s.node, "name": s.name, "kind": s.kind, "records": s.count,
                     "in_window": s.in_window, "first": s.first, "last": s.last} for s in a.stats()],
    }
    text = json.dumps(head, indent=1)
    out.write(text[:-2] + ',\n "events": [')
    sep = "\n  "
    printer = Printer(w.ref)
    for e in a.events():
        out.write(sep + json.dumps(event_dict(e, printer), ensure_ascii=False))
        sep = ",\n  "
    out.write("\n ]\n}\n")


def history_of_manifest(manifest: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The history section of ``inspect`` for an archive's manifest alone (no scan)."""
    clocks = ClockMap.from_manifest(manifest)
    ref = scan.reference_time(manifest)
    return [h.as_dict() for h in history.of_manifest(manifest, ref, clocks)]
