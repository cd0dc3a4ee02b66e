"""Readers of each source's files in an archive, as streams of ``(time, text)`` in aligned
epoch seconds (see :mod:`.clocks`), in file order (each file is in time order).

| kind | collector type | member | clock |
| --- | --- | --- | --- |
| ``kmsg`` | dmesg | kmsg.jsonl | since boot (``usec``), + monotonic offset |
| ``ftrace`` | ftrace | trace.txt | the instance's trace clock, + its offset |
| ``packets`` | tcpdump | tcpdump.pcapN | realtime |
| ``counters`` | scoutfs-counters | counters-series.csv | realtime (UTC text, ms) |

Every reader yields its text with each control character escaped, once, here, as the
kernel's ``\\xHH`` (a tab ``\\x09``, ESC ``\\x1b``: :func:`kernel_text.escape_controls`).
kmsg.jsonl holds the kernel's text unescaped, and a text trace holds what was written to
a trace_marker and printk:console's kernel lines as they were, tabs and escape sequences
included. So no control character reaches a spool line, a terminal, the report or a
JSON reader, and every output prints the same text (:mod:`.lines` prints the lines).
"""

from __future__ import annotations

import calendar
import csv
import dataclasses
import json
import time
from typing import IO, Any, Callable, Dict, FrozenSet, Iterator, List, Optional, Tuple

from scoutfs_collect.analysis import packets
from scoutfs_collect.analysis.clocks import ClockMap
from scoutfs_collect.system import pcap, tracefs
from scoutfs_collect.system.kernel_text import escape_controls, escape_controls_in_lines, has_controls
from scoutfs_collect.system.pcap import PcapError

KINDS = ("kmsg", "ftrace", "packets", "counters")
#: The kinds an analyzer may declare (``Analyzer.sources``): the timeline's, the sysinfo
#: snapshots, and two that are not records (every archive's manifest; a bundle).
ANALYZER_KINDS = KINDS + ("sysinfo", "manifest", "bundle")
KIND_OF_TYPE = {"dmesg": "kmsg", "ftrace": "ftrace", "tcpdump": "packets", "scoutfs-counters": "counters"}
TimedText = Tuple[float, str]


@dataclasses.dataclass
class SourceSpec:
    """One plugin instance of the archive that the timeline reads: its ``name`` (the
    instance, e.g. ``tcpdump-ib``), ``kind``, and how to turn its stamps into epoch."""

    name: str
    kind: str
    offset: Optional[float]  # seconds added to the file's own stamps; None: cannot convert
    details: Dict[str, Any]

    def wants(self, member: str) -> bool:
        """Whether ``member`` (path below the plugin directory) is read for the timeline."""
        if self.kind == "kmsg":
            return member == "kmsg.jsonl"
        if self.kind == "ftrace":
            return member == "trace.txt"
        if self.kind == "packets":
            return member.startswith("tcpdump.pcap") and member[len("tcpdump.pcap"):].isdigit()
        return member in ("counters-series.csv", "counters-series.old.csv")


def specs(manifest: Dict[str, Any], clocks: ClockMap) -> List[SourceSpec]:
    """The timeline sources of an archive, from its manifest's plugins."""
    out = []
    plugins = manifest.get("plugins")
    for name, plugin in sorted(plugins.items() if isinstance(plugins, dict) else []):
        if not isinstance(plugin, dict) or plugin.get("type") not in KIND_OF_TYPE:
            continue
        kind, det = KIND_OF_TYPE[plugin["type"]], plugin.get("details")
        det = det if isinstance(det, dict) else {}
        if kind == "ftrace":
            offset = clocks.trace_clock_offset(det.get("trace_clock"), det.get("clock_offset_s"))
        elif kind == "kmsg":
            offset = clocks.kmsg_offset(det)
        else:
            offset = -clocks.node_offset
        out.append(SourceSpec(name, kind, offset, det))
    return out


CounterSink = Callable[[float, str, str, int], None]  # (time, mount, counter, value)
#: (aligned time, linktype, buffer, start, end): the captured bytes are buffer[start:end]
FrameSink = Callable[[float, int, bytes, int, int], None]


Span = Tuple[float, float]  # the window: records outside it get "" as text (not formatted)


@dataclasses.dataclass(frozen=True)
class Share:
    """The blocks of a text trace one process reads when several share it: those whose
    index modulo ``every`` is in ``mine`` (the others are skipped unparsed)."""

    every: int
    mine: FrozenSet[int]

    def __contains__(self, index: int) -> bool:
        return index % self.every in self.mine


def read(spec: SourceSpec, stream: IO[bytes], span: Span, on_counter: Optional[CounterSink] = None,
         share: Optional[Share] = None, on_frame: Optional[FrameSink] = None) -> Iterator[TimedText]:
    """The (time, text) records of one member of ``spec``'s directory, text only inside
    ``span``; counter values also go to ``on_counter`` (the report's small plots), every
    captured frame of a pcap file to ``on_frame`` (the analyzers); ``share``: of a text
    trace, only the blocks in it."""
    if spec.offset is None:
        return iter(())
    if spec.kind == "counters":
        return counter_records(spec.offset, stream, on_counter)
    if spec.kind == "ftrace" and share is not None:
        return ftrace_records(spec.offset, stream, span, share)
    if spec.kind == "packets" and on_frame is not None:
        return _frame_records(spec.offset, stream, span, on_frame)  # not through packet_records: a layer less
    reader: Callable[[float, IO[bytes], Span], Iterator[TimedText]] = _READERS[spec.kind]
    return reader(spec.offset, stream, span)


CHUNK = 1 << 20


def byte_blocks(stream: IO[bytes]) -> Iterator[bytes]:
    """A member stream in blocks of about CHUNK bytes, each ending at a line's end (the
    last may lack its newline), so that each can be decoded and split on its own."""
    rest = b""
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            break
        chunk = rest + chunk if rest else chunk
        cut = chunk.rfind(b"\n")
        if cut < 0:
            rest = chunk
            continue
        rest = chunk[cut + 1:]
        yield chunk[:cut + 1]
    if rest:
        yield rest


def _line_blocks(stream: IO[bytes], escape: bool) -> Iterator[List[str]]:
    """The lines of a member stream, a list per block of :func:`byte_blocks`, each block
    decoded at once (line by line through the tar stream's buffers, or a TextIOWrapper,
    costs more than the parsing; the wrapper would also ask it to seek); ``escape``:
    their control characters escaped."""
    for block in byte_blocks(stream):
        text = block.decode("utf-8", "replace")
        if escape and has_controls(block):
            text = escape_controls_in_lines(text)
        lines = text.split("\n")
        if not lines[-1]:
            lines.pop()
        yield lines


def _text(stream: IO[bytes], escape: bool) -> Iterator[str]:
    """The lines of a member stream (see :func:`_line_blocks`)."""
    for block in _line_blocks(stream, escape):
        yield from block


def kmsg_records(offset: float, stream: IO[bytes], span: Span) -> Iterator[TimedText]:
    """Each record of kmsg.jsonl, its text escaped (a multi-line record's newlines too)."""
    for line in _text(stream, escape=False):  # JSON: a control character is decoded below
        try:
            row = json.loads(line)
            t = offset + row["usec"] / 1e6
        except (ValueError, KeyError, TypeError):
            continue
        yield t, escape_controls(str(row.get("text", "")))


def ftrace_records(offset: float, stream: IO[bytes], span: Span, share: Optional[Share] = None
                   ) -> Iterator[TimedText]:
    """Each event line of a text trace (tracefs ``trace`` or ``trace-cmd report``) as it
    is but for its control characters (escaped: a marker's or a kernel line's tab, ESC),
    ftrace's own timestamp included (to find it in trace.txt); with ``share``, only
    those of its blocks (each process reading the same stream cuts the same blocks)."""
    start, end = span
    event_times = tracefs.event_times
    for index, raw in enumerate(byte_blocks(stream)):
        if share is not None and index not in share:
            continue
        block = raw.decode("utf-8", "replace").split("\n")
        clean: Optional[Callable[[str], str]] = None  # chosen once a line of the block is needed
        for ts, line in event_times(block):
            ts += offset
            if start <= ts <= end:
                if clean is None:
                    clean = _escaped_and_stripped if has_controls(raw) else str.strip
                yield ts, clean(line)
            else:
                yield ts, ""


def _escaped_and_stripped(line: str) -> str:
    return escape_controls(line).strip()


def packet_records(offset: float, stream: IO[bytes], span: Span, on_frame: Optional[FrameSink] = None
                   ) -> Iterator[TimedText]:
    """Packets outside ``span`` as (time, ""), those inside through :func:`packets.lines`
    (one line each, or burst lines); with ``on_frame``, each packet's frame also goes there,
    in file order, as it is read."""
    return _frame_records(offset, stream, span, on_frame or _no_frame)


def _no_frame(t: float, linktype: int, buf: bytes, start: int, end: int) -> None:
    """The frame sink of a pass without analyzers (the timeline's own)."""


def _frame_records(offset: float, stream: IO[bytes], span: Span, on_frame: FrameSink) -> Iterator[TimedText]:
    """:func:`packet_records` with every frame handed to ``on_frame`` (:func:`pcap.frames`:
    the frames read in place; only those inside ``span`` are copied, for their lines)."""
    start, end = span
    inside: List[packets.Packet] = []
    decode = packets.decode
    kept: List[Tuple[int, bytes, int]] = []
    try:
        for t in pcap.frames(stream, "pcap", offset, on_frame, span, kept):  # type: ignore[arg-type]
            if kept:
                linktype, data, origlen = kept.pop()
                inside.append(decode(t, linktype, data, origlen))
                if len(inside) >= 4096:  # a slot's burst may span the flush: lines() keeps order
                    yield from packets.lines(inside)
                    inside = []
            else:
                if inside:
                    yield from packets.lines(inside)
                    inside = []
                yield t, ""
    except PcapError:
        pass
    if inside:
        yield from packets.lines(inside)


def _utc(text: str) -> Optional[float]:
    try:
        whole, _, frac = text.partition(".")
        return calendar.timegm(time.strptime(whole, "%Y-%m-%d %H:%M:%S")) + float(f"0.{frac or 0}")
    except ValueError:
        return None


def counter_records(offset: float, stream: IO[bytes], on_counter: Optional[CounterSink] = None
                    ) -> Iterator[TimedText]:
    """``counter +delta`` (``mount`` prefixed when there are several) per series row;
    the first sighting of a counter (no change) reads ``counter = value``."""
    rows = csv.reader(_text(stream, escape=True))
    next(rows, None)
    cache: Dict[str, Optional[float]] = {}
    for row in rows:
        if len(row) < 6:
            continue
        stamp, _elapsed, mount, name, value, change = row[:6]
        if stamp not in cache:
            cache.clear()
            cache[stamp] = _utc(stamp)
        t = cache[stamp]
        if t is None:
            continue
        if on_counter is not None and value.lstrip("-").isdigit():
            on_counter(t + offset, mount, name, int(value))
        text = f"{name} = {value}" if change == "" else f"{name} {_signed(change)}"
        yield t + offset, f"{text}  ({mount})"


def _signed(change: str) -> str:
    return change if change.startswith("-") else f"+{change}"


_READERS: Dict[str, Callable[[float, IO[bytes]], Iterator[TimedText]]] = {
    "kmsg": kmsg_records, "ftrace": ftrace_records, "packets": packet_records,
}
