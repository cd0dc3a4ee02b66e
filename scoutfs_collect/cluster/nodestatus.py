"""Node side of ``cluster gather``: ``scoutfs-collect cluster node-status`` prints one JSON
line about this host's latest run, found through the host lock's record (which names
the run's work dir; the archive sits beside it):

``{"version", "running", "pid", "workdir", "archive"}`` — ``running`` true while a run
holds the lock (its archive does not exist yet); ``archive`` null when the latest run
left no archive (its work dir can then be packed with ``scoutfs-collect pack``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

from scoutfs_collect import __version__
from scoutfs_collect.system.lock import HostLock
from scoutfs_collect.system.paths import ARCHIVE_SUFFIXES


def latest_archive(workdir: Optional[str]) -> Optional[Path]:
    if not workdir:
        return None
    wd = Path(workdir)
    for suffix in ARCHIVE_SUFFIXES.values():
        candidate = wd.parent / (wd.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def status() -> Dict[str, Any]:
    lock = HostLock()
    holder = lock.probe()
    last = holder or lock.last()
    archive = None if holder else latest_archive(last.workdir if last else None)
    return {"version": __version__, "running": holder is not None,
            "pid": last.pid if last else None, "workdir": last.workdir if last else None,
            "archive": str(archive) if archive else None}


def print_status() -> int:
    print(json.dumps(status()), flush=True)
    return 0
