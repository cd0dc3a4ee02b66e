"""``scoutfs-collect pack WORKDIR``: archive the work dir of a run that did not finish.

The runner writes ``manifest.json`` into the work dir as soon as collectors are
armed, so an interrupted or killed run leaves enough to build a valid archive: the
manifest is completed with the files found (sizes, sha256) and marked incomplete.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import archive, manifest
from .console import Console, stdout_line
from .errors import EXIT_NO_ARCHIVE, EXIT_OK, UsageError
from .lock import HostLock
from .paths import fsync_tree


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
    compression = (data.get("profile") or {}).get("settings", {}).get("compression", "zstd")
    if archive.compression_problem(compression):
        compression = "xz"
    try:
        path = archive.pack(workdir, workdir.parent, compression,
                            progress=lambda d, t: console.progress("packing", d, t))
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
