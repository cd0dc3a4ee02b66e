"""The merged timeline of an archive or a cluster bundle: every source's records in the
window around the trigger, on one clock, in order (``heapq.merge`` over the per-member
spools of :mod:`.scan`: memory stays flat whatever the archive's size)."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, TextIO

from scoutfs_collect.analysis import history, scan, sources
from scoutfs_collect.analysis.bundle import Bundle, open_bundle
from scoutfs_collect.analysis.clocks import ClockMap


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


def utc_us(t: float, _last: List[Any] = [None, ""]) -> str:  # noqa: B006 (a one-entry cache)
    """Epoch seconds as ``2026-12-03T14:09:18.675884Z``."""
    whole = int(t // 1)
    micros = int(round((t - whole) * 1e6))
    if micros == 1000000:
        whole, micros = whole + 1, 0
    if _last[0] != whole:
        _last[0], _last[1] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_last[1]}.{micros:06d}Z"


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
        return scan.merged([p for n in self.nodes for _, p in n.spools])

    def events(self) -> Iterator[Event]:
        """Every spooled record of every node and source, merged in time order."""
        for line in self.lines():
            t, node, source, text = line[:-1].split("\t", 3)
            yield Event(float(t), node, source, text)

    def history(self) -> List[history.SourceHistory]:
        out = []
        for n in self.nodes:
            out += history.of_manifest(n.manifest, self.window.ref, n.clocks, n.node)
        return out

    def stats(self) -> List[scan.SourceStats]:
        return [s for n in self.nodes for s in n.stats.values()]


def _parse_sources(text: Optional[str]) -> Optional[List[str]]:
    if not text:
        return None
    return [s.strip() for s in text.split(",") if s.strip()]


def analyse(path: Path, before: float = 2.0, after: float = 0.1, wanted: Optional[str] = None,
            counters: bool = False) -> Analysis:
    """Scan ``path`` (an archive or a bundle). ``wanted``: comma-separated source kinds
    (kmsg, ftrace, packets, counters) or plugin instance names. Raises ValueError with a
    one-line message for bad input."""
    if before < 0 or after < 0:
        raise ValueError("--before and --after must be 0 or more seconds")
    names = _parse_sources(wanted)
    tmp = tempfile.TemporaryDirectory(prefix="scoutfs-collect-analysis.")
    try:
        root = Path(tmp.name)
        (root / "spool").mkdir()
        bundle = open_bundle(path, root)
        archives = [(None, Path(path), 0.0)] if bundle is None else \
            [(n, n.archive, n.clock_offset_ms / 1000) for n in bundle.nodes if n.archive is not None]
        ref = bundle.reference() if bundle is not None else None
        holder: Dict[str, scan.Window] = {}

        def window_of(manifest: Dict[str, Any], clocks: ClockMap) -> scan.Window:
            if "w" not in holder:
                own = scan.reference_time(manifest)
                r = ref if ref is not None else (clocks.realtime(own) if own is not None else time.time())
                holder["w"] = scan.Window(r, before, after)
            return holder["w"]

        nodes = []
        for node, archive, offset in archives:
            nodes.append(scan.scan(archive, root / "spool", window_of, node.name if node else "",
                                   offset, names, counters))
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


# ---------------------------------------------------------------- output


def render(a: Analysis, out: TextIO) -> int:
    """The human timeline; returns the number of event lines written."""
    w = a.window
    out.write(f"Timeline of {a.path.name}: {utc_us(w.start)} .. {utc_us(w.end)} "
              f"({w.before:g} s before the trigger to {w.after:g} s after)\n")
    out.write(f"trigger at {utc_us(w.ref)}; times UTC, then seconds relative to the trigger\n")
    if a.bundle is not None:
        out.writelines(f"{line}\n" for line in a.bundle.header_lines())
    for n in a.nodes:
        where = f"{n.node}: " if n.node else ""
        out.write(f"  {where}clocks from manifest {n.clocks.source}"
                  + (f", node clock offset {n.clocks.node_offset * 1000:+.3f} ms" if n.node else "") + "\n")
    out.write("\nHistory kept\n")
    for h in a.history():
        out.write(f"  {(h.node + '/' if h.node else '') + h.name:<24} {h.line()}\n")
    out.write("\n")
    width = max([len(s.label) for s in a.stats()] + [6])
    labels = {f"{s.node}\t{s.name}": f"{s.label:<{width}}" for s in a.stats()}
    count, ref, held = 0, w.ref, []
    for line in a.lines():
        t, node, source, text = line.split("\t", 3)
        when = float(t)
        held.append(f"{utc_us(when)} {when - ref:+10.6f}  {labels[node + chr(9) + source]}  {text}")
        if len(held) >= 4096:
            out.writelines(held)
            count += len(held)
            held = []
    out.writelines(held)
    count += len(held)
    if count == 0:
        out.write("(no records in the window)\n")
    return count


def event_dict(e: Event, ref: float) -> Dict[str, Any]:
    return {"time": round(e.time, 6), "utc": utc_us(e.time), "rel": round(e.time - ref, 6),
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
    for e in a.events():
        out.write(sep + json.dumps(event_dict(e, w.ref), ensure_ascii=False))
        sep = ",\n  "
    out.write("\n ]\n}\n")


def history_of_manifest(manifest: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The history section of ``inspect`` for an archive's manifest alone (no scan)."""
    clocks = ClockMap.from_manifest(manifest)
    ref = scan.reference_time(manifest)
    return [h.as_dict() for h in history.of_manifest(manifest, ref, clocks)]
