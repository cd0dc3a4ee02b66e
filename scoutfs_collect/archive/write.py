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
import hashlib
import logging
import os
import stat
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from scoutfs_collect.archive.compress import (  # noqa: F401 - compression_problem, available_compressors: part of this module's API
    CHUNK,
    DEFAULT_LEVELS,
    LEVEL_RANGES,
    GuardedOutput,
    Sink,
    available_compressors,
    compression_problem,
    open_sink,
)
from scoutfs_collect.system.paths import ARCHIVE_SUFFIXES, fsync_path

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PROGRESS_INTERVAL = 0.1
Progress = Callable[[int, int], None]


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


class _Meter:
    """Counts input bytes consumed; calls progress at most every PROGRESS_INTERVAL s."""

    def __init__(self, total: int, progress: Optional[Progress]) -> None:
        self.total, self.done, self.progress = total, 0, progress
        self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        if self.progress is not None and time.monotonic() - self.last >= PROGRESS_INTERVAL:
            self.last = time.monotonic()
            self.progress(self.done, self.total)


def _tarinfo(name: str, entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if entry.is_dir else tarfile.REGTYPE
    info.size = entry.size
    info.mode = entry.mode
    info.mtime = int(entry.mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _copy_file(sink: Sink, entry: Entry, meter: _Meter) -> None:
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


def _write_tar(sink: Sink, top: str, entries: List[Entry], meter: _Meter) -> None:
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
    stops (OSError ENOSPC) before a write of the archive would leave less than that free
    in ``output_dir``, however much the compressor holds back. Raises FileExistsError if the
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
    meter = _Meter(sum(e.size for e in entries), progress)

    fd, tmp = tempfile.mkstemp(prefix=".scoutfs-collect-", suffix=".partial", dir=output_dir)
    sink = None
    try:
        sink = open_sink(compression, level, GuardedOutput(fd, str(output_dir), min_free_bytes))
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
