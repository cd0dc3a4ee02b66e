"""The kernel log through ``/dev/kmsg``: the one place that reads it.

Record format (Documentation/ABI/testing/dev-kmsg)::

    PRI,SEQ,TS_USEC,FLAGS[,MORE...];TEXT\\n
     KEY=VALUE\\n            (zero or more continuation lines, each starting with a space)

``PRI`` is ``facility << 3 | level``; ``SEQ`` the record's sequence number (contiguous,
so a jump means records were lost); ``TS_USEC`` microseconds since boot. Bytes below
0x20, above 0x7e and the backslash are escaped in ``TEXT`` and values as ``\\xHH``.

One ``read()`` returns exactly one record. A non-blocking reader gets ``EAGAIN`` when it
has read everything, and ``EPIPE`` when the record at its position was overwritten
before it was read (the ring wrapped); the next read then returns the oldest record
still present, and the jump in sequence numbers tells how many were lost.

Timestamps: the kernel stamps records with ``local_clock()`` (sched_clock), which
counts like ``CLOCK_MONOTONIC`` (time since boot, stopped in suspend). :class:`EpochClock`
maps them to epoch seconds with one offset ``time.time() - CLOCK_MONOTONIC`` measured
once. This is an approximation: sched_clock is not NTP-slewed while CLOCK_MONOTONIC is
(a few ppm, i.e. milliseconds per day; measured 1.6 ms apart after 5 minutes on a VM),
a suspend/resume skews both alike, and a wall-clock step after the offset was measured
is not followed. Good to a few milliseconds on a server that has been up for days.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import logging
import os
import time
from typing import Callable, Dict, Iterator, List, Optional

from scoutfs_collect.system.kernel_text import unescape
from scoutfs_collect.system.wakeup import Wakeup, WatcherThread

log = logging.getLogger(__name__)

DEVICE = "/dev/kmsg"
#: The kernel never returns a record longer than this (CONSOLE_EXT_LOG_MAX).
RECORD_MAX = 8192
LEVEL_NAMES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
FACILITY_NAMES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",
    "uucp", "cron", "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
) + tuple(f"local{n}" for n in range(8))
@dataclasses.dataclass(frozen=True)
class KmsgRecord:
    """One decoded kernel log record; ``raw`` is the record exactly as read."""

    seq: int
    facility: int
    level: int
    usec: int
    flags: str
    text: str
    fields: Dict[str, str]
    raw: bytes

    @property
    def level_name(self) -> str:
        return LEVEL_NAMES[self.level]

    @property
    def facility_name(self) -> str:
        if self.facility < len(FACILITY_NAMES):
            return FACILITY_NAMES[self.facility]
        return str(self.facility)

    def as_dict(self, clock: Optional[EpochClock] = None) -> Dict[str, object]:
        out: Dict[str, object] = {
            "seq": self.seq,
            "level": self.level,
            "facility": self.facility,
            "usec": self.usec,
            "epoch": round(clock.epoch(self.usec), 6) if clock else None,
            "flags": self.flags,
            "text": self.text,
        }
        if self.fields:
            out["fields"] = self.fields
        return out


def parse_record(raw: bytes) -> KmsgRecord:
    """Decode one record; ValueError (with the reason) when it is not a kmsg record."""
    head, sep, rest = raw.partition(b";")
    if not sep:
        raise ValueError("no ';' after the record prefix")
    parts = head.split(b",")
    if len(parts) < 4:
        raise ValueError(f"prefix {head[:40]!r} has fewer than 4 fields")
    try:
        pri, seq, usec = int(parts[0]), int(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError(f"prefix {head[:40]!r} is not PRI,SEQ,TS_USEC,FLAGS") from None
    if pri < 0 or seq < 0 or usec < 0:
        raise ValueError(f"negative number in prefix {head[:40]!r}")
    lines = rest.rstrip(b"\n").split(b"\n")
    fields: Dict[str, str] = {}
    for line in lines[1:]:
        if not line.startswith(b" "):
            raise ValueError(f"continuation line {line[:40]!r} does not start with a space")
        key, _, value = line[1:].partition(b"=")
        fields[unescape(key)] = unescape(value)
    return KmsgRecord(
        seq=seq,
        facility=pri >> 3,
        level=pri & 7,
        usec=usec,
        flags=",".join(p.decode("ascii", "replace") for p in parts[3:]),
        text=unescape(lines[0]),
        fields=fields,
        raw=raw if raw.endswith(b"\n") else raw + b"\n",
    )


def split_records(data: bytes) -> Iterator[bytes]:
    """Cut a concatenation of raw records (a file written by a follower) into records:
    a record starts at each line that does not start with a space."""
    current: List[bytes] = []
    for line in data.splitlines(keepends=True):
        if line.startswith(b" ") and current:
            current.append(line)
            continue
        if current:
            yield b"".join(current)
        current = [line]
    if current:
        yield b"".join(current)


def parse_stream(data: bytes, what: str = "kmsg data") -> Iterator[KmsgRecord]:
    """The records of a raw file; unparseable ones (a torn last write) are logged, skipped."""
    for raw in split_records(data):
        try:
            yield parse_record(raw)
        except ValueError as exc:
            log.warning("%s: skipped a bad record (%s): %r", what, exc, raw[:80])


@dataclasses.dataclass(frozen=True)
class Gap:
    """Records lost between two that were read: ``first``..``first + count - 1``."""

    first: int
    count: int
    reason: str = "overwritten in the kernel ring before they were read"

    def describe(self) -> str:
        last = self.first + self.count - 1
        return f"{self.count} kernel log records lost (seq {self.first}..{last}): {self.reason}"


class SeqTracker:
    """Notices jumps in sequence numbers; every jump is a :class:`Gap`."""

    def __init__(self) -> None:
        self.last: Optional[int] = None
        self.gaps: List[Gap] = []

    def see(self, seq: int) -> Optional[Gap]:
        gap = None
        if self.last is not None and seq > self.last + 1:
            gap = Gap(self.last + 1, seq - self.last - 1)
            self.gaps.append(gap)
        if self.last is None or seq > self.last:
            self.last = seq
        return gap

    @property
    def lost(self) -> int:
        return sum(g.count for g in self.gaps)


@dataclasses.dataclass(frozen=True)
class EpochClock:
    """Maps a record's microseconds-since-boot to epoch seconds (see the module notes)."""

    offset: float

    @classmethod
    def measure(cls) -> EpochClock:
        return cls(time.time() - time.clock_gettime(time.CLOCK_MONOTONIC))

    def epoch(self, usec: int) -> float:
        return self.offset + usec / 1e6


def ring_size(default: int = 1 << 20) -> int:
    """Size in bytes of the kernel log ring (syslog(SYSLOG_ACTION_SIZE_BUFFER)), or default."""
    try:
        size = ctypes.CDLL(None, use_errno=True).klogctl(10, None, 0)
    except (OSError, AttributeError):
        return default
    return size if size > 0 else default


class KmsgReader:
    """A non-blocking reader of ``/dev/kmsg``.

    ``from_end=True`` starts after the newest record (only new lines are read),
    otherwise at the oldest record still in the ring. :meth:`read_available` returns
    what is there without blocking; wait for more with
    ``wakeup.wait_readable([reader.fd])``.
    """

    def __init__(self, device: str = DEVICE, from_end: bool = False) -> None:
        self.device = device
        self.fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.lseek(self.fd, 0, os.SEEK_END if from_end else os.SEEK_SET)
        except OSError:
            os.close(self.fd)
            raise
        self.tracker = SeqTracker()
        self.epipe_count = 0
        self.garbage_count = 0
        self.records_read = 0

    def read_available(self, limit: Optional[int] = None) -> List[KmsgRecord]:
        """Every record readable now (at most ``limit``); never blocks."""
        out: List[KmsgRecord] = []
        while limit is None or len(out) < limit:
            try:
                raw = os.read(self.fd, RECORD_MAX)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten; the next read resumes
                    self.epipe_count += 1
                    continue
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not raw:
                break
            try:
                record = parse_record(raw)
            except ValueError as exc:
                self.garbage_count += 1
                log.warning("%s: skipped a bad record (%s): %r", self.device, exc, raw[:80])
                continue
            gap = self.tracker.see(record.seq)
            if gap is not None:
                log.warning("%s: %s", self.device, gap.describe())
            out.append(record)
        self.records_read += len(out)
        return out

    def stats(self) -> Dict[str, int]:
        return {
            "records": self.records_read,
            "lost": self.tracker.lost,
            "epipe": self.epipe_count,
            "garbage": self.garbage_count,
        }

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def follow(
    reader: KmsgReader, wakeup: Wakeup, on_records: Callable[[List[KmsgRecord]], bool]
) -> None:
    """Hand each batch of new records to ``on_records`` until ``wakeup`` is set or
    ``on_records`` returns True. Blocks in poll between batches (no periodic wake-up);
    once woken for the stop, drains what is readable before returning."""
    while True:
        records = reader.read_available()
        if records and on_records(records):
            return
        if wakeup.is_set():
            return
        wakeup.wait_readable([reader.fd])


class KmsgFollower:
    """:func:`follow` in a :class:`WatcherThread`; :meth:`stop` drains, then ends it.

    ``on_error(message)`` is called (from the thread) if reading or ``on_records`` fails.
    """

    def __init__(
        self,
        reader: KmsgReader,
        on_records: Callable[[List[KmsgRecord]], object],
        on_error: Callable[[str], None],
        name: str = "kmsg-follower",
    ) -> None:
        self.reader = reader
        self._on_records = on_records
        self._watcher = WatcherThread(
            lambda wakeup: follow(reader, wakeup, self._hand_over),
            on_error=lambda message: on_error(f"kernel log reader stopped: {message}"),
            name=name,
        )

    def start(self) -> None:
        self._watcher.start()

    def _hand_over(self, records: List[KmsgRecord]) -> bool:
        self._on_records(records)
        return False  # a follower reads until stopped

    def stop(self, timeout: float = 2.0) -> bool:
        """Wake the thread, let it read what is readable, wait for it; False if it hung."""
        return self._watcher.stop(timeout)
