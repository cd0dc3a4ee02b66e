"""Who writes the global tracefs files during a test: fanotify (``FAN_MODIFY``, root only)
reports each write() to a watched file with the writer's pid, which a thread sorts at once
into this test's own process tree (this process and its descendants: the CLI runs,
trace-cmd), other processes, and writers gone before they could be looked at.

The ``tracefs_untouched`` fixture (tests/conftest.py) fails on any write of ours, whatever
the value, and ignores what other processes on the machine do to the same files."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import select
import struct
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence

FAN_CLASS_NOTIF, FAN_CLOEXEC, FAN_NONBLOCK = 0x0, 0x1, 0x2
FAN_MARK_ADD, FAN_MODIFY = 0x1, 0x2
AT_FDCWD = -100
_METADATA = struct.Struct("IBBHQii")  # struct fanotify_event_metadata (version 3)
OURS, OTHER, GONE = "ours", "other", "gone"


@dataclasses.dataclass(frozen=True)
class Write:
    """One write() to a watched file: the file, the writer's pid, its command line (when
    it could still be read) and whose it was (OURS, OTHER or GONE)."""

    path: str
    pid: int
    command: str
    whose: str


def _parent(pid: int) -> Optional[int]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the comm may hold spaces and ')'


def _whose(pid: int, root: int) -> str:
    """OURS when ``pid`` is ``root`` or a descendant of it, OTHER when it is alive and is
    not, GONE when it exited before it could be looked at."""
    current: Optional[int] = pid
    first = True
    while current is not None and current > 0:
        if current == root:
            return OURS
        parent = _parent(current)
        if parent is None and first:
            return GONE
        current, first = parent, False
    return OTHER


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


class WriteWatch:
    """Watches ``paths`` from :meth:`start` to :meth:`stop` (use it as a context manager).
    ``available`` False when fanotify cannot be used here (not root, an old kernel): then
    nothing is recorded, and ``why`` says why."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self.writes: List[Write] = []
        self.available, self.why = False, ""
        self._names: Dict[tuple, str] = {}  # (st_dev, st_ino) -> the path watched
        self._fd = -1
        self._wake_r, self._wake_w = -1, -1
        self._thread: Optional[threading.Thread] = None
        self._root = os.getpid()

    def __enter__(self) -> WriteWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "fanotify_init"):
            self.why = "no fanotify_init in the C library"
            return
        libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                                       ctypes.c_char_p]
        fd = libc.fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, os.O_RDONLY | os.O_CLOEXEC)
        if fd < 0:
            self.why = f"fanotify_init: {os.strerror(ctypes.get_errno())}"
            return
        for path in self.paths:
            if libc.fanotify_mark(fd, FAN_MARK_ADD, FAN_MODIFY, AT_FDCWD, os.fsencode(path)) != 0:
                self.why = f"fanotify_mark {path}: {os.strerror(ctypes.get_errno())}"
                os.close(fd)
                return
            st = os.stat(path)
            self._names[(st.st_dev, st.st_ino)] = str(path)  # tracefs may be mounted twice
        self._fd, self.available = fd, True
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._loop, name="tracefs-write-watch", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            self._drain()
            if self._wake_r in ready:
                return

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 64 * _METADATA.size)
            except BlockingIOError:
                return
            while len(data) >= _METADATA.size:
                event_len, _vers, _, _mlen, _mask, fd, pid = _METADATA.unpack_from(data)
                whose = _whose(pid, self._root)  # first: a writer may exit any moment
                command = _command(pid)
                path = "?"
                if fd >= 0:
                    try:
                        st = os.fstat(fd)
                        path = self._names.get((st.st_dev, st.st_ino)) or os.readlink(f"/proc/self/fd/{fd}")
                    finally:
                        os.close(fd)
                self.writes.append(Write(path, pid, command, whose))
                data = data[event_len:]

    def stop(self) -> None:
        """Record the last writes (each is queued before its write() returns) and stop."""
        if self._fd < 0:
            return
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(10)
        for fd in (self._fd, self._wake_r, self._wake_w):
            os.close(fd)
        self._fd = -1

    def by_whom(self) -> Dict[str, List[Write]]:
        out: Dict[str, List[Write]] = {OURS: [], OTHER: [], GONE: []}
        for w in self.writes:
            out[w.whose].append(w)
        return out
