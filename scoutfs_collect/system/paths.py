"""Where things live: configuration, the host lock, work directories and archives.

``SCOUTFS_COLLECT_ETC`` (default ``/etc/scoutfs-collect``) and
``SCOUTFS_COLLECT_RUNTIME`` (default ``/run/scoutfs-collect``) move the system
directories, for tests and for sites that keep configuration elsewhere.
"""

from __future__ import annotations

import ctypes
import os
import socket
import time
from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, Path]
PREFIX = "scoutfs-collect"
ARCHIVE_SUFFIXES = {"zstd": ".tar.zst", "xz": ".tar.xz", "gz": ".tar.gz"}


def etc_dir() -> Path:
    """Site configuration: ``profiles/`` and ``plugins.d/`` live here."""
    return Path(os.environ.get("SCOUTFS_COLLECT_ETC", "/etc/scoutfs-collect"))


def runtime_dir() -> Path:
    """Holds the host lock of the running instance."""
    return Path(os.environ.get("SCOUTFS_COLLECT_RUNTIME", "/run/scoutfs-collect"))


def run_stem(started: float, hostname: Optional[str] = None) -> str:
    """``scoutfs-collect.HOSTNAME.YYYYMMDD-HHMMSSZ`` (UTC): the work dir and archive name."""
    host = (hostname or socket.gethostname()).split(".")[0] or "localhost"
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in host)
    return f"{PREFIX}.{host}.{time.strftime('%Y%m%d-%H%M%SZ', time.gmtime(started))}"


def make_workdir(output_dir: Path, stem: str) -> Path:
    """Create the run's work directory (mode 0700, never an existing path or symlink)."""
    for n in range(100):
        candidate = output_dir / (stem if n == 0 else f"{stem}.{n}")
        try:
            os.mkdir(candidate, 0o700)
        except FileExistsError:
            continue
        os.chmod(candidate, 0o700)  # umask may have narrowed it; never widened
        return candidate
    raise FileExistsError(f"{output_dir}: too many work directories named {stem}*")


def fsync_path(path: PathLike) -> None:
    """fsync one file or directory; errors other than a vanished path propagate."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = None


def start_writeback(fd: int) -> None:
    """Start writing the dirty pages of file ``fd`` to storage without waiting for them
    (Linux sync_file_range SYNC_FILE_RANGE_WRITE), so that a later fsync has little left
    to do. A hint: a no-op where the call is missing or fails."""
    global _sync_file_range
    if _sync_file_range is None:
        func = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", False)
        if func:
            func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        _sync_file_range = func
    if _sync_file_range:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def fsync_tree(root: PathLike) -> int:
    """fsync every regular file and directory below ``root``; the number of files synced."""
    count = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                fsync_path(path)
                count += 1
        fsync_path(dirpath)
    return count
