"""Reading classic pcap files (what tcpdump -w writes): packet times, counts and payloads.

Used by the tcpdump collector for the capture window and ring order, by the analysis
(timeline, report) reading archive members as streams, and by tests and benchmarks to
count what was captured. Pure Python; no libpcap needed.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, List, NamedTuple, Optional, Tuple

_MAGIC = {  # first 4 bytes of the file -> (byte order, fraction units per second)
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
_MAX_CAPLEN = 262144
CHUNK = 1 << 20


class PcapError(ValueError):
    """The file is not a classic pcap file."""


class PcapRecord(NamedTuple):
    """One captured packet (a NamedTuple: a full ring is ~100k of them to read)."""

    time: float  # epoch seconds
    caplen: int
    origlen: int
    data: bytes = b""


def file_header(head: bytes, path: Path) -> Tuple[str, int, int, int]:
    """``(byte order, fraction units per second, the largest caplen taken as sane, link
    type)`` of a pcap file's first 24 bytes; PcapError naming ``path`` if it is none."""
    if len(head) < 24 or head[:4] not in _MAGIC:
        raise PcapError(f"{path}: not a pcap file")
    order, units = _MAGIC[head[:4]]
    *_version, snaplen, linktype = struct.unpack(order + "HHiIII", head[4:])
    return order, units, max(snaplen, _MAX_CAPLEN), linktype


def frames(stream: BinaryIO, path: Path, offset: float, sink: Callable[[float, int, bytes, int, int], None],
           keep: Tuple[float, float] = (math.inf, -math.inf),
           kept: Optional[List[Tuple[int, bytes, int]]] = None) -> Iterator[float]:
    """The time of each record of a pcap stream (``offset`` added), its frame handed to
    ``sink(time, linktype, buffer, start, end)`` first (the captured bytes are
    ``buffer[start:end]``, not copied), and, if its time is in ``keep`` (inclusive),
    ``(linktype, captured bytes, original length)`` appended to ``kept``. What
    :class:`PcapReader` reads, in one loop over CHUNK-sized reads, for the analyzers'
    pass over every frame; a partial last record or an impossible length ends it."""
    order, units, limit, linktype = file_header(stream.read(24), path)
    unpack = struct.Struct(order + "IIII").unpack_from
    lo, hi = keep
    buf, pos, eof = b"", 0, False
    while not eof:
        more = stream.read(CHUNK)
        buf, pos, eof = buf[pos:] + more, 0, not more
        size = len(buf)
        while pos + 16 <= size:
            sec, frac, caplen, origlen = unpack(buf, pos)
            end = pos + 16 + caplen
            if caplen > limit:
                return
            if end > size:
                break
            t = sec + frac / units + offset
            sink(t, linktype, buf, pos + 16, end)
            if lo <= t <= hi and kept is not None:
                kept.append((linktype, buf[pos + 16:end], origlen))
            yield t
            pos = end


class PcapReader:
    """Iterate the records of a classic pcap file (either byte order, micro- or nanoseconds).

    A partial last record (the writer was killed mid-write) ends the iteration and
    sets ``truncated``; so does a record header with an impossible length.
    """

    def __init__(self, path: Path, with_data: bool = False,
                 stream: Optional[BinaryIO] = None,
                 data_between: Optional[Tuple[float, float]] = None) -> None:
        """``stream``: read from this file object (e.g. a tar member) instead of
        opening ``path``, which then only names it in errors. ``with_data``: records
        carry their bytes; with ``data_between`` (epoch seconds, inclusive) only the
        records of that span do (the others are only counted by their reader)."""
        self.path = Path(path)
        self.with_data = with_data
        self.data_between = data_between
        self.stream = stream
        self.truncated = False
        self.linktype: Optional[int] = None

    def __iter__(self) -> Iterator[PcapRecord]:
        if self.stream is not None:
            yield from self._records(self.stream)
            return
        with open(self.path, "rb") as f:
            yield from self._records(f)

    def _records(self, f: BinaryIO) -> Iterator[PcapRecord]:
        """Records parsed from CHUNK-sized reads (two small reads per packet cost more
        than the parsing on a tar member stream)."""
        order, units, limit, self.linktype = file_header(f.read(24), self.path)
        unpack = struct.Struct(order + "IIII").unpack_from
        buf, pos, eof = b"", 0, False
        lo, hi = self.data_between or (-math.inf, math.inf)
        if not self.with_data:
            lo, hi = math.inf, -math.inf
        while True:
            if not eof and len(buf) - pos < 16 + limit:  # top up: a whole record must fit
                more = f.read(CHUNK)
                buf, pos, eof = buf[pos:] + more, 0, not more
            if len(buf) - pos < 16:
                self.truncated = len(buf) - pos > 0
                return
            sec, frac, caplen, origlen = unpack(buf, pos)
            end = pos + 16 + caplen
            if caplen > limit or end > len(buf):
                self.truncated = True
                return
            t = sec + frac / units
            yield PcapRecord(t, caplen, origlen, buf[pos + 16:end] if lo <= t <= hi else b"")
            pos = end


@dataclasses.dataclass
class PcapSummary:
    """What one ring file holds."""

    name: str
    bytes: int
    mtime_ns: int
    packets: int = 0
    first: Optional[float] = None
    last: Optional[float] = None
    truncated: bool = False
    error: str = ""


def summarize(path: Path) -> PcapSummary:
    """Packet count, first and last packet time of one pcap file (errors kept, not raised)."""
    st = path.stat()
    out = PcapSummary(path.name, st.st_size, st.st_mtime_ns)
    reader = PcapReader(path)
    try:
        for record in reader:
            out.packets += 1
            out.first = record.time if out.first is None else min(out.first, record.time)
            out.last = record.time if out.last is None else max(out.last, record.time)
    except (OSError, PcapError) as exc:
        out.error = str(exc)
    out.truncated = reader.truncated
    return out
