"""Threads that block on file descriptors and a stop flag, never on a periodic wake-up:
:class:`Wakeup` (the flag, pollable) and :class:`WatcherThread` (a loop in a thread that
a stop ends). The one copy, used by the threaded triggers and the kernel log follower."""

from __future__ import annotations

import os
import select
import threading
from typing import Callable, List, Optional


class Wakeup:
    """A stop flag that a thread can wait on alone or together with file descriptors.

    ``fd`` becomes readable once :meth:`set` is called, so a watcher can
    ``poll([its_fd, wakeup.fd])`` and leave its loop without any periodic wake-up.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    @property
    def fd(self) -> int:
        return self._read_fd

    def set(self) -> None:
        if not self._event.is_set():
            self._event.set()
            try:
                os.write(self._write_fd, b"x")
            except OSError:
                pass

    def poke(self) -> None:
        """Make ``fd`` readable without setting the flag ("something arrived"). Safe in a
        signal handler: one write on a non-blocking pipe, no lock (a full pipe is already
        readable)."""
        try:
            os.write(self._write_fd, b"x")
        except OSError:
            pass

    def drain(self) -> bool:
        """Read what :meth:`poke` (or :meth:`set`) wrote; True if there was anything."""
        got = False
        try:
            while os.read(self._read_fd, 4096):
                got = True
        except BlockingIOError:
            pass
        return got

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._event.wait(timeout)

    def wait_readable(self, fds: List[int], timeout: Optional[float] = None) -> List[int]:
        """Block until one of ``fds`` is readable or the wakeup is set; return readable fds."""
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN | select.POLLPRI)
        poller.register(self._read_fd, select.POLLIN)
        ms = None if timeout is None else int(timeout * 1000)
        ready = poller.poll(ms)
        return [fd for fd, _ in ready if fd != self._read_fd]

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


class WatcherThread:
    """``loop(wakeup)`` in a daemon thread of its own, until it returns.

    :meth:`stop` sets the wakeup, waits for the loop (which should return once
    ``wakeup.is_set()``, after a last look at what is readable) and releases it; it
    returns False if the loop did not end within ``timeout``. An exception in the loop
    is reported once through ``on_error(message)``: a broken watcher must be visible.
    """

    def __init__(self, loop: Callable[[Wakeup], object], on_error: Callable[[str], None],
                 name: str) -> None:
        self.wakeup = Wakeup()
        self._loop = loop
        self._on_error = on_error
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self._loop(self.wakeup)
        except Exception as exc:
            self._on_error(f"{type(exc).__name__}: {exc}")

    def stop(self, timeout: Optional[float] = 2.0) -> bool:
        self.wakeup.set()
        if self.thread.ident is not None:
            self.thread.join(timeout)
        if self.thread.is_alive():
            return False
        self.wakeup.close()
        return True
