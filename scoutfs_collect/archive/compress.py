"""The compressors behind :func:`scoutfs_collect.archive.write.pack`, and the one writer of
the archive's bytes.

Whatever compresses (the ``zstd`` or ``xz`` program, Python's gzip or lzma), every
compressed byte reaches the archive file through :class:`GuardedOutput`, which checks
free space before each write and refuses one that would take the filesystem below the
floor. An external compressor therefore never gets the archive file: it writes into a
pipe this process drains. That bounds what is *written*, however much the compressor
holds back (``zstd -T0`` and ``xz -T0`` keep whole jobs of several MiB, and write the
last ones after their input has ended).
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from typing import IO, Dict, List, Optional, Union

from scoutfs_collect.system.paths import ARCHIVE_SUFFIXES, start_writeback

try:
    import lzma
except ImportError:  # a Python built without liblzma
    lzma = None  # type: ignore[assignment]

CHUNK = 1 << 20
MiB = 1 << 20
DEFAULT_LEVELS = {"zstd": 3, "xz": 6, "gz": 6}
LEVEL_RANGES = {"zstd": (1, 19), "xz": (0, 9), "gz": (1, 9)}
# Pipes to and from a compressor are widened to this (Linux's default limit for
# unprivileged users is 1 MiB too): 16x fewer wake-ups than the default 64 KiB.
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
Buffer = Union[bytes, bytearray, memoryview]


def available_compressors() -> Dict[str, bool]:
    """Which compressions can be used here (zstd needs the ``zstd`` program)."""
    xz = shutil.which("xz") is not None or lzma is not None
    return {"zstd": shutil.which("zstd") is not None, "xz": xz, "gz": True}


def compression_problem(compression: str) -> Optional[str]:
    """Why ``compression`` cannot be used here, with the fix; None when it can."""
    if compression not in ARCHIVE_SUFFIXES:
        return (f"unknown compression {compression!r}: choose one of "
                f"{', '.join(sorted(ARCHIVE_SUFFIXES))}")
    if available_compressors()[compression]:
        return None
    if compression == "zstd":
        return ("zstd is not installed: install it (dnf install zstd / apt-get install zstd) "
                "or use --set settings.compression=xz")
    return ("xz is not available (no xz program, Python without lzma): install it "
            "(dnf install xz / apt-get install xz-utils) or use --set settings.compression=gz")


class GuardedOutput:
    """The archive file ``fd`` in ``directory``, written only through this object.

    With ``floor`` > 0, no write may leave less than ``floor`` bytes free in
    ``directory``: one that would is refused with OSError ENOSPC before anything of it is
    written (a statvfs costs ~1 us, a write here is up to 1 MiB). Every WRITEBACK bytes,
    writing to storage is started without waiting, so the fsync at the end is short.
    After :meth:`abandon`, every write is refused (a compressor flushing while the
    archive is being given up).
    """

    WRITEBACK = 32 << 20

    def __init__(self, fd: int, directory: str, floor: int = 0) -> None:
        self.fd, self.directory, self.floor = fd, directory, floor
        self.written = 0
        self._unsynced = 0
        self._abandoned = False

    def room(self) -> int:
        """Bytes that may still be written (free space above the floor), -1 after abandon."""
        if self._abandoned:
            return -1
        if self.floor <= 0:
            return sys.maxsize
        st = os.statvfs(self.directory)
        return st.f_bavail * st.f_frsize - self.floor

    def _refuse(self, size: int) -> OSError:
        if self._abandoned:
            return OSError(errno.ECANCELED, "archive abandoned", self.directory)
        free = max(0, self.room()) + self.floor
        return OSError(errno.ENOSPC,
                       f"stopped packing: {free // MiB} MiB free, writing {size // 1024} KiB "
                       f"more would go below the floor of {self.floor // MiB} MiB",
                       self.directory)

    def _wrote(self, size: int) -> None:
        self.written += size
        self._unsynced += size
        if self._unsynced >= self.WRITEBACK:
            self._unsynced = 0
            start_writeback(self.fd)

    def write(self, data: Buffer) -> int:
        """Write all of ``data`` or, if it does not fit above the floor, none of it."""
        view = memoryview(data).cast("B")
        size = len(view)
        if size and self.room() < size:
            raise self._refuse(size)
        while view:
            view = view[os.write(self.fd, view):]
        self._wrote(size)
        return size

    def flush(self) -> None:
        """Nothing is buffered here (file objects wrapping this one call it)."""

    def drain(self, pipe: int) -> None:
        """Write everything read from ``pipe`` until its end, through one 1 MiB buffer.

        One path on every Python: splice() (3.10+) would save ~0.1 s of CPU per 300 MiB,
        and the compressor is the bottleneck. (The ~270 MiB peak once blamed on splice()
        was the test's measurement: ru_maxrss inherited through vfork.)"""
        self._drain_copying(pipe)

    def _drain_copying(self, pipe: int) -> None:
        buf = bytearray(PIPE_SIZE)
        view = memoryview(buf)
        while True:
            n = os.readv(pipe, [buf])
            if n == 0:
                return
            self.write(view[:n])

    def abandon(self) -> None:
        self._abandoned = True


def _widen(fd: int) -> None:
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:  # a lower limit (fs.pipe-max-size): the default works, just slower
        pass


class PipeSink:
    """An external compressor (zstd, xz) reading the tar stream from a pipe and writing
    into another pipe, which a thread drains into ``output``.

    File data goes to the compressor with sendfile(): no copy through Python. When the
    output refuses a write (the floor) or fails, the compressor is killed at once, so
    it never writes anywhere else; the next write to it raises that error.
    """

    def __init__(self, argv: List[str], output: GuardedOutput) -> None:
        self.errors = tempfile.TemporaryFile()
        # A short-lived pipe, not a long-lived child: proc.py owns those.
        # Own session: a Ctrl-C reaches only the runner, which decides what to kill.
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors,
            bufsize=0, start_new_session=True, close_fds=True,
        )
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.fd = self.popen.stdin.fileno()
        self._out = self.popen.stdout.fileno()
        _widen(self.fd)
        _widen(self._out)
        self.output = output
        self.failure: Optional[BaseException] = None
        self._drainer = threading.Thread(target=self._drain, name="pack-output", daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        try:
            self.output.drain(self._out)
        except BaseException as exc:  # noqa: BLE001 - handed to the packing thread
            self.failure = exc
            self._kill()

    def _kill(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _broken(self) -> BaseException:
        self.popen.wait()
        self._drainer.join()
        if self.failure is not None:
            return self.failure
        return OSError(f"{self.popen.args[0]} exited early: {self._stderr()}")

    def write(self, data: Buffer) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except BrokenPipeError:
            raise self._broken() from None

    def copy(self, src: int, offset: int, count: int) -> int:
        """Up to ``count`` bytes of file ``src`` from ``offset``; 0 at its end."""
        try:
            return os.sendfile(self.fd, src, offset, count)
        except BrokenPipeError:
            raise self._broken() from None

    def _stderr(self) -> str:
        self.errors.seek(0)
        text = self.errors.read(4000).decode(errors="replace").strip()
        return text or f"exit status {self.popen.poll()}"

    def finish(self) -> None:
        try:
            self.popen.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        self._drainer.join()  # the compressor's last output, written after its input ended
        code = self.popen.wait()
        if self.failure is not None:
            raise self.failure
        if code != 0:
            raise OSError(f"{self.popen.args[0]} failed ({code}): {self._stderr()}")
        self._close()

    def abort(self) -> None:
        self.output.abandon()
        self._kill()
        self.popen.wait()
        try:
            self.popen.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        self._drainer.join()
        self._close()

    def _close(self) -> None:
        self.popen.stdout.close()  # type: ignore[union-attr]
        self.errors.close()


class PySink:
    """A Python compressor (gzip, lzma) writing into ``output`` as it goes."""

    def __init__(self, compression: str, level: int, output: GuardedOutput) -> None:
        self.output = output
        if compression == "gz":
            self.comp: IO[bytes] = gzip.GzipFile(
                filename="", mode="wb", compresslevel=level,
                fileobj=output, mtime=0,  # type: ignore[arg-type]
            )
        else:
            self.comp = lzma.LZMAFile(output, "wb", format=lzma.FORMAT_XZ, preset=level)
        self.buf = bytearray(CHUNK)

    def write(self, data: Buffer) -> None:
        self.comp.write(data)

    def copy(self, src: int, offset: int, count: int) -> int:
        view = memoryview(self.buf)[:count]
        n = os.preadv(src, [view], offset)
        self.comp.write(view[:n])
        return n

    def finish(self) -> None:
        self.comp.close()

    def abort(self) -> None:
        self.output.abandon()
        try:
            self.comp.close()
        except Exception:  # noqa: BLE001 - already failing; the temp file goes anyway
            pass


Sink = Union[PipeSink, PySink]


def open_sink(compression: str, level: int, output: GuardedOutput) -> Sink:
    """The compressor for ``compression`` at ``level``, writing into ``output``."""
    if compression == "zstd":
        return PipeSink(["zstd", "-T0", "-q", f"-{level}", "-c"], output)
    if compression == "xz" and shutil.which("xz"):  # multi-threaded: ~1.5x python lzma here
        return PipeSink(["xz", "-T0", "-q", f"-{level}", "-c"], output)
    return PySink(compression, level, output)
