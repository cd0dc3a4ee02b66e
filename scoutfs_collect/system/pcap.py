"""Reading classic pcap files (what tcpdump -w writes): packet times, counts and payloads.

Used by the tcpdump collector for the capture window and ring order, by the analysis
(timeline, report) reading archive members as streams, and by tests and benchmarks to
count what was captured. Pure Python; no libpcap needed.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

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


@dataclasses.dataclass(frozen=True)
class PcapRecord:
    """One captured packet."""

    time: float  # epoch seconds
    caplen: int
    origlen: int
    data: bytes = b""


class PcapReader:
    """Iterate the records of a classic pcap file (either byte order, micro- or nanoseconds).

    A partial last record (the writer was killed mid-write) ends the iteration and
    sets ``truncated``; so does a record header with an impossible length.
    """

    def __init__(self, path: Path, with_data: bool = False,
                 stream: Optional[BinaryIO] = None) -> None:
        """``stream``: read from this file object (e.g. a tar member) instead of
        opening ``path``, which then only names it in errors."""
        self.path = Path(path)
        self.with_data = with_data
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
        head = f.read(24)
        if len(head) < 24 or head[:4] not in _MAGIC:
            raise PcapError(f"{self.path}: not a pcap file")
        order, units = _MAGIC[head[:4]]
        *_version, snaplen, self.linktype = struct.unpack(order + "HHiIII", head[4:])
        limit, rec = max(snaplen, _MAX_CAPLEN), struct.Struct(order + "IIII")
        buf, pos, with_data, eof = b"", 0, self.with_data, False
        while True:
            if not eof and len(buf) - pos < 16 + limit:  # top up: a whole record must fit
                more = f.read(CHUNK)
                buf, pos, eof = buf[pos:] + more, 0, not more
            if len(buf) - pos < 16:
                self.truncated = len(buf) - pos > 0
                return
            sec, frac, caplen, origlen = rec.unpack_from(buf, pos)
            end = pos + 16 + caplen
            if caplen > limit or end > len(buf):
                self.truncated = True
                return
            yield PcapRecord(sec + frac / units, caplen, origlen, buf[pos + 16:end] if with_data else b"")
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
