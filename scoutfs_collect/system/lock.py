"""One scoutfs-collect per host: an flock'ed file that names its holder.

The kernel drops an flock when its holder dies, so a lock left by a killed run is
never in the way; the file's last contents still name that run's PID and work dir,
which the next run reports so its data can be packed with ``scoutfs-collect pack``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from pathlib import Path
from typing import Optional

from scoutfs_collect.system.paths import runtime_dir


@dataclasses.dataclass
class Holder:
    """What the lock file says about the run that holds (or held) it."""

    pid: int
    workdir: Optional[str] = None
    started: Optional[float] = None
    finished: bool = False


class LockBusy(Exception):
    """Another scoutfs-collect is running; ``holder`` names it."""

    def __init__(self, holder: Optional[Holder]) -> None:
        super().__init__(f"another scoutfs-collect is already running (pid {holder.pid if holder else '?'})")
        self.holder = holder


def _read(fd: int) -> Optional[Holder]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        data = json.loads(raw)
        return Holder(
            pid=int(data["pid"]),
            workdir=data.get("workdir"),
            started=data.get("started"),
            finished=bool(data.get("finished")),
        )
    except (ValueError, KeyError, TypeError):
        return None


class HostLock:
    """The host-wide lock. ``acquire`` returns the previous holder's record (stale)."""

    def __init__(self) -> None:
        self.path: Path = runtime_dir() / "lock"
        self.fd: Optional[int] = None

    def _open(self) -> int:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)

    def probe(self) -> Optional[Holder]:
        """The live holder, or None if the lock is free. Changes nothing."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read(fd) or Holder(pid=-1)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def last(self) -> Optional[Holder]:
        """What the lock file says about the latest run, held or not (None: no run yet)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            return _read(fd)
        finally:
            os.close(fd)

    def wait_released(self) -> None:
        """Block until the current holder lets go of the lock (no polling)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)

    def acquire(self) -> Optional[Holder]:
        """Take the lock or raise LockBusy. Returns an unfinished earlier run's record."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise LockBusy(holder) from None
        self.fd = fd
        previous = _read(fd)
        self.write(Holder(pid=os.getpid()))
        if previous and not previous.finished and previous.pid != os.getpid():
            return previous
        return None

    def write(self, holder: Holder) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, json.dumps(dataclasses.asdict(holder)).encode())

    def release(self) -> None:
        """Mark the run finished (the next run reports no leftover) and let go."""
        if self.fd is None:
            return
        holder = _read(self.fd) or Holder(pid=os.getpid())
        holder.finished = True
        self.write(holder)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None
