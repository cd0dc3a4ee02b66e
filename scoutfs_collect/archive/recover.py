"""``scoutfs-collect pack WORKDIR``: archive the work dir of a run that did not finish.

The runner writes ``manifest.json`` into the work dir as soon as collectors are
armed, so an interrupted or killed run leaves enough to build a valid archive: the
manifest is completed with the files found (sizes, sha256) and marked incomplete.

A packer killed mid-write leaves its temporary ``.scoutfs-collect-*.partial`` file
(never the final name); :func:`remove_stale_partials` removes those at the next run
and at ``pack``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import List, Set

from scoutfs_collect.archive import manifest
from scoutfs_collect.archive import write as archive
from scoutfs_collect.core.checks import packing_floor
from scoutfs_collect.core.errors import EXIT_NO_ARCHIVE, EXIT_OK, UsageError
from scoutfs_collect.core.profile import Settings
from scoutfs_collect.system import proc
from scoutfs_collect.system.lock import HostLock
from scoutfs_collect.system.paths import fsync_tree
from scoutfs_collect.ui.console import Console, stdout_line

PARTIAL_GLOB = ".scoutfs-collect-*.partial"  # archive.pack's temporary names
STALE_AFTER = 10.0  # seconds without a write before a partial no process holds is stale


def remove_stale_partials(directory: Path) -> List[str]:
    """Remove partial archives in ``directory`` left by a killed packer; one note each.

    Only files no process has open and nobody wrote to for STALE_AFTER seconds: a
    packer at work (even another ``scoutfs-collect pack``) is never disturbed.
    """
    return remove_stale(directory, PARTIAL_GLOB, "a partial archive left by an interrupted packing")


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
                except OSError:
                    pass
    return newest


def _held_below(path: Path, held: Set[str]) -> bool:
    real = os.path.realpath(path)
    return any(h == real or h.startswith(real + os.sep) for h in held)


def remove_stale(directory: Path, pattern: str, what: str) -> List[str]:
    """Remove the files and directories matching ``pattern`` in ``directory`` that a
    killed writer left (``what`` says what they are, in the note of each): only those
    nothing below is open in any process and nothing below was written to for
    STALE_AFTER seconds. Symlinks are never followed or removed."""
    try:
        found = [p for p in Path(directory).glob(pattern) if not p.is_symlink()]
        now = time.time()
        found = [p for p in found if now - _newest_mtime(p) >= STALE_AFTER]
    except OSError:
        return []
    held = set(proc.open_files()) if found else set()
    notes = []
    for path in found:
        if _held_below(path, held):
            continue
        try:
            if path.is_dir():
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
                shutil.rmtree(path)
            else:
                size = path.lstat().st_size
                path.unlink()
        except OSError:
            continue
        notes.append(f"removed {path} ({size / (1 << 20):.1f} MiB), {what}")
    return notes


def pack_workdir(workdir: Path, console: Console) -> int:
    """Complete the manifest of ``workdir`` and pack it beside the work dir."""
    workdir = workdir.absolute()
    if not workdir.is_dir() or workdir.is_symlink():
        raise UsageError(f"pack: {workdir}: not a directory")
    data = manifest.read(workdir)
    if data.get("format") != manifest.FORMAT:
        raise UsageError(f"pack: {workdir}: no scoutfs-collect manifest.json in it")
    holder = HostLock().probe()
    if holder is not None and holder.workdir and Path(holder.workdir) == workdir:
        raise UsageError(f"pack: {workdir} belongs to the running scoutfs-collect "
                         f"(pid {holder.pid}); use 'scoutfs-collect stop' instead")
    for name, record in (data.get("plugins") or {}).items():
        plugin_dir = workdir / name
        if plugin_dir.is_dir():
            record["files"] = archive.sha256_files(plugin_dir)
    result = data.setdefault("result", {})
    if result.get("complete") and result.get("exit_status") is not None:
        # The runner wrote its final manifest: only packing was interrupted.
        note = "packing was interrupted; the run was packed later by scoutfs-collect pack"
    else:
        result["complete"] = False
        note = "the run did not finish: collectors may not have been stopped or finalized"
    result.update(packed_by="scoutfs-collect pack", packed_at=time.time())
    result.setdefault("notes", []).append(note)
    manifest.write(workdir, data)
    fsync_tree(workdir)
    for note in remove_stale_partials(workdir.parent):
        console.line(f"note: {note}")
    settings = (data.get("profile") or {}).get("settings", {})
    compression = settings.get("compression", "zstd")
    floor = packing_floor(int(settings.get("min_free_mb", Settings.min_free_mb)))
    if archive.compression_problem(compression):
        compression = "xz"
    try:
        path = archive.pack(workdir, workdir.parent, compression,
                            progress=lambda d, t: console.progress("packing", d, t),
                            min_free_bytes=floor)
    except FileExistsError as exc:
        console.end_status()
        raise UsageError(f"pack: {exc}") from None
    except (OSError, KeyboardInterrupt) as exc:
        console.end_status()
        console.line(f"error: cannot write the archive: {exc or 'interrupted'}; "
                     f"{workdir} is unchanged")
        return EXIT_NO_ARCHIVE
    console.end_status()
    console.line(f"packed; the work dir {workdir} is kept (remove it when the archive is safe)")
    stdout_line(f"archive: {path}")
    return EXIT_OK
