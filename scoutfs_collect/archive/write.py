"""Packing a run's work directory into one compressed tar archive, in constant memory.

The archive ``<output_dir>/<workdir.name><suffix>`` holds one top directory named like
the work directory; ``manifest.json`` is its first member (so ``inspect`` reads it
without decompressing the rest), then every directory and regular file in sorted
order. Owners are stored as root (0/0), modes and mtimes as on disk; symlinks,
sockets, fifos and devices are skipped and logged.

The archive is written under a temporary name (``.scoutfs-collect-*.partial``, mode
0600) in ``output_dir``, fsync'd, then published under its final name without ever
replacing an existing file or symlink. On any error or interrupt the temporary file
is removed: a partial archive never carries the final name.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import errno
import gzip
import hashlib
import logging
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO, Callable, Dict, List, Optional

from scoutfs_collect.system.paths import ARCHIVE_SUFFIXES, fsync_path

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MANIFEST = "manifest.json"
DEFAULT_LEVELS = {"zstd": 3, "xz": 6, "gz": 6}
LEVEL_RANGES = {"zstd": (1, 19), "xz": (0, 9), "gz": (1, 9)}
PROGRESS_INTERVAL = 0.1
Progress = Callable[[int, int], None]

try:
    import lzma
except ImportError:  # a Python built without liblzma
    lzma = None  # type: ignore[assignment]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One directory or regular file below the work directory, as stat'ed once."""

    rel: str  # relative posix path; "" for the root itself
    path: str
    is_dir: bool
    size: int
    mode: int
    mtime: float


def walk(root: Path) -> List[Entry]:
    """Directories and regular files below ``root`` (root first), in sorted order.

    Anything else (symlinks, sockets, fifos, devices) is skipped and logged.
    """
    st = os.lstat(root)
    entries = [Entry("", str(root), True, 0, stat.S_IMODE(st.st_mode), st.st_mtime)]

    def visit(directory: str, prefix: str) -> None:
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda e: e.name)
        for child in children:
            rel, cst = prefix + child.name, child.stat(follow_symlinks=False)
            is_dir, is_reg = stat.S_ISDIR(cst.st_mode), stat.S_ISREG(cst.st_mode)
            if not (is_dir or is_reg):
                log.warning("not archived (not a regular file or directory): %s", child.path)
                continue
            entries.append(Entry(rel, child.path, is_dir, cst.st_size if is_reg else 0,
                                 stat.S_IMODE(cst.st_mode), cst.st_mtime))
            if is_dir:
                visit(child.path, rel + "/")

    visit(str(root), "")
    return entries


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


class _Meter:
    """Counts input bytes consumed; calls progress at most every PROGRESS_INTERVAL s."""

    def __init__(self, total: int, progress: Optional[Progress],
                 space: Optional[Callable[[], None]] = None) -> None:
        self.total, self.done, self.progress, self.space = total, 0, progress, space
        self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        if self.space is not None:  # every chunk: a statvfs is ~1 us, a chunk 1 MiB
            self.space()
        if self.progress is not None and time.monotonic() - self.last >= PROGRESS_INTERVAL:
            self.last = time.monotonic()
            self.progress(self.done, self.total)


def _free_space_guard(output_dir: Path, floor: int) -> Callable[[], None]:
    """Raises ENOSPC once free space in ``output_dir`` is below ``floor`` bytes, so a
    pack that cannot fit stops before the disk is full rather than at 100 %."""
    def check() -> None:
        st = os.statvfs(output_dir)
        free = st.f_bavail * st.f_frsize
        if free < floor:
            raise OSError(errno.ENOSPC, f"stopped packing: {free // 2**20} MiB free, below the "
                                        f"floor of {floor // 2**20} MiB", str(output_dir))
    return check


class _PipeSink:
    """An external compressor (zstd, xz) reading the tar stream and writing into ``fd``.

    File data goes to its stdin with sendfile(): no copy through Python.
    """

    def __init__(self, argv: List[str], fd: int) -> None:
        self.errors = tempfile.TemporaryFile()
        # A short-lived pipe, not a long-lived child: proc.py owns those.
        # Own session: a Ctrl-C reaches only the runner, which decides what to kill.
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=fd, stderr=self.errors, bufsize=0,
            start_new_session=True, close_fds=True,
        )
        assert self.popen.stdin is not None
        self.fd = self.popen.stdin.fileno()

    def _broken(self) -> OSError:
        self.popen.wait()
        return OSError(f"{self.popen.args[0]} exited early: {self._stderr()}")

    def write(self, data: bytes) -> None:
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
        code = self.popen.wait()
        if code != 0:
            raise OSError(f"{self.popen.args[0]} failed ({code}): {self._stderr()}")
        self.errors.close()

    def abort(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.popen.wait()
        try:
            self.popen.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        self.errors.close()


class _PySink:
    """A Python compressor (gzip, lzma) writing into ``fd``."""

    def __init__(self, compression: str, level: int, fd: int) -> None:
        self.raw = os.fdopen(os.dup(fd), "wb", buffering=0)
        if compression == "gz":
            self.comp: IO[bytes] = gzip.GzipFile(
                filename="", mode="wb", compresslevel=level, fileobj=self.raw, mtime=0
            )
        else:
            self.comp = lzma.LZMAFile(self.raw, "wb", format=lzma.FORMAT_XZ, preset=level)
        self.buf = bytearray(CHUNK)

    def write(self, data: bytes) -> None:
        self.comp.write(data)

    def copy(self, src: int, offset: int, count: int) -> int:
        view = memoryview(self.buf)[:count]
        n = os.preadv(src, [view], offset)
        self.comp.write(view[:n])
        return n

    def finish(self) -> None:
        self.comp.close()
        self.raw.close()

    def abort(self) -> None:
        for f in (self.comp, self.raw):
            try:
                f.close()
            except Exception:  # noqa: BLE001 - already failing; the temp file goes anyway
                pass


def _sink(compression: str, level: int, fd: int):
    if compression == "zstd":
        return _PipeSink(["zstd", "-T0", "-q", f"-{level}", "-c"], fd)
    if compression == "xz" and shutil.which("xz"):  # multi-threaded: ~1.5x python lzma here
        return _PipeSink(["xz", "-T0", "-q", f"-{level}", "-c"], fd)
    return _PySink(compression, level, fd)


def _tarinfo(name: str, entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if entry.is_dir else tarfile.REGTYPE
    info.size = entry.size
    info.mode = entry.mode
    info.mtime = int(entry.mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _copy_file(sink, entry: Entry, meter: _Meter) -> None:
    """Exactly ``entry.size`` bytes of the file, as stat'ed before packing.

    A file that grew is cut there, one that shrank is padded with zeros (both logged):
    a collector still writing never makes the archive fail.
    """
    fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        offset = 0
        while offset < entry.size:
            n = sink.copy(fd, offset, min(CHUNK, entry.size - offset))
            if n == 0:
                log.warning("%s shrank while packing: padded with %d zero bytes",
                            entry.path, entry.size - offset)
                while offset < entry.size:
                    n = min(CHUNK, entry.size - offset)
                    sink.write(bytes(n))
                    offset += n
                    meter.add(n)
                break
            offset += n
            meter.add(n)
        else:
            if os.pread(fd, 1, entry.size):
                log.warning("%s grew while packing: archived its first %d bytes",
                            entry.path, entry.size)
    finally:
        os.close(fd)


def _write_tar(sink, top: str, entries: List[Entry], meter: _Meter) -> None:
    """The tar stream (POSIX pax format), written straight to ``sink``."""
    written = 0
    for entry in entries:
        name = f"{top}/{entry.rel}" if entry.rel else top
        header = _tarinfo(name, entry).tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING,
                                             "surrogateescape")
        sink.write(header)
        written += len(header)
        if not entry.is_dir:
            _copy_file(sink, entry, meter)
            pad = -entry.size % tarfile.BLOCKSIZE
            sink.write(bytes(pad))
            written += entry.size + pad
    end = 2 * tarfile.BLOCKSIZE
    end += -(written + end) % tarfile.RECORDSIZE
    sink.write(bytes(end))


def _rename_noreplace(src: str, dst: str) -> None:
    """rename() that fails with FileExistsError rather than replace ``dst``."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc >= 2.28
    if renameat2 is not None:
        at_fdcwd, rename_noreplace = -100, 1
        if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), dst)
    # Last resort (no hard links, no RENAME_NOREPLACE): check, then rename; a tiny race.
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "refusing to overwrite", dst)
    os.rename(src, dst)


def _publish(tmp: str, final: str) -> None:
    """Give the complete temporary file its final name, never replacing anything."""
    try:
        os.link(tmp, final, follow_symlinks=False)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "refusing to overwrite", final) from None
    except OSError as exc:  # a filesystem without hard links (EPERM, EOPNOTSUPP, ...)
        log.debug("link(%s, %s) failed (%s); renaming without replace", tmp, final, exc)
        _rename_noreplace(tmp, final)
        return
    os.unlink(tmp)


def archive_path(workdir: Path, output_dir: Path, compression: str = "zstd") -> Path:
    """Where :func:`pack` puts the archive of ``workdir``."""
    return Path(output_dir) / (Path(workdir).name + ARCHIVE_SUFFIXES[compression])


def pack(
    workdir: Path,
    output_dir: Path,
    compression: str = "zstd",
    progress: Optional[Progress] = None,
    level: Optional[int] = None,
    min_free_bytes: int = 0,
) -> Path:
    """Pack ``workdir`` into ``output_dir``; return the archive's path.

    ``progress(done, total)`` gets the input bytes consumed and the total input size,
    at most ten times a second and once at the end. With ``min_free_bytes``, packing
    stops (OSError ENOSPC) when free space in ``output_dir`` falls below it. Raises FileExistsError if the
    archive name is taken (even by a symlink), ValueError for a compression or level
    that cannot be used; the temporary file is removed whatever goes wrong.
    """
    workdir, output_dir = Path(workdir), Path(output_dir)
    problem = compression_problem(compression)
    if problem:
        raise ValueError(problem)
    level = DEFAULT_LEVELS[compression] if level is None else int(level)
    low, high = LEVEL_RANGES[compression]
    if not low <= level <= high:
        raise ValueError(f"{compression} level {level} is out of range {low}..{high}")
    final = archive_path(workdir, output_dir, compression)
    if os.path.lexists(final):
        raise FileExistsError(errno.EEXIST, "refusing to overwrite", str(final))

    entries = walk(workdir)
    first = [e for e in entries if e.rel == MANIFEST and not e.is_dir]
    entries = first + [e for e in entries if e not in first]
    guard = _free_space_guard(output_dir, min_free_bytes) if min_free_bytes > 0 else None
    meter = _Meter(sum(e.size for e in entries), progress, guard)

    fd, tmp = tempfile.mkstemp(prefix=".scoutfs-collect-", suffix=".partial", dir=output_dir)
    sink = None
    try:
        sink = _sink(compression, level, fd)
        _write_tar(sink, workdir.name, entries, meter)
        sink.finish()
        sink = None
        os.fsync(fd)
        os.close(fd)
        fd = -1
        _publish(tmp, str(final))
    except BaseException:
        if sink is not None:
            sink.abort()
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_path(output_dir)
    if progress is not None:
        progress(meter.done, meter.total)
    return final


def _sha256(path: str) -> Dict[str, object]:
    digest, buf, size = hashlib.sha256(), bytearray(CHUNK), 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            digest.update(memoryview(buf)[:n])
            size += n
    return {"size": size, "sha256": digest.hexdigest()}


def sha256_files(root: Path) -> List[Dict[str, object]]:
    """``[{"path", "size", "sha256"}]`` for every regular file below ``root``, sorted.

    ``path`` is relative (posix); ``size`` is the number of bytes hashed. Streams 1 MiB
    chunks on two threads (hashlib releases the GIL).
    """
    files = [e for e in walk(Path(root)) if not e.is_dir]
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="sha256") as pool:
        sums = list(pool.map(_sha256, [e.path for e in files]))
    return [{"path": e.rel, **s} for e, s in zip(files, sums)]
