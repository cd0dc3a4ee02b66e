"""Node side of ``cluster gather``: ``scoutfs-collect cluster node-status [--output-dir DIR]``
prints one JSON line about this host's latest run:

``{"version", "running", "pid", "workdir", "archive", "unpacked"}`` — ``running`` true
while a run holds the lock (its archive does not exist yet); ``archive`` the archive
beside the work dir, or null; ``unpacked`` true when the run is not running and left its
work dir with a manifest but no archive (killed or powered off before it packed):
``cluster gather`` then packs it with ``scoutfs-collect pack``.

The latest run is the one the host lock's record names (it names the run's work dir).
That record lives in the runtime dir (``/run``, emptied at boot), so for a node that was
powered off and booted again ``--output-dir`` names where the runs write (the cluster
run's ``--output-dir``): the newest run found there (a work dir or an archive, by the
start time in its name) counts too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from scoutfs_collect import __version__
from scoutfs_collect.archive import manifest
from scoutfs_collect.system.lock import HostLock
from scoutfs_collect.system.paths import ARCHIVE_SUFFIXES, PREFIX


def latest_archive(workdir: Optional[str]) -> Optional[Path]:
    if not workdir:
        return None
    wd = Path(workdir)
    for suffix in ARCHIVE_SUFFIXES.values():
        candidate = wd.parent / (wd.name + suffix)
        if candidate.is_file():
            return candidate
    return None


_STAMP = re.compile(r"\.(\d{8}-\d{6}Z)(?:\.(\d+))?$")


def _when(stem: str) -> Tuple[str, int]:
    """The start stamp in a run's name (``scoutfs-collect.HOST.YYYYMMDD-HHMMSSZ[.N]``),
    sortable; ("", 0) for another name."""
    m = _STAMP.search(stem)
    return (m.group(1), int(m.group(2) or 0)) if m else ("", 0)


def newest_run(output_dir: Path) -> Optional[str]:
    """The work dir (whether it still exists or only its archive does) of the newest run
    in ``output_dir``, by the start time in its name; None if there is none."""
    stems = []
    try:
        for entry in output_dir.glob(f"{PREFIX}.*"):
            name = entry.name
            for suffix in ARCHIVE_SUFFIXES.values():
                if name.endswith(suffix) and entry.is_file():
                    stems.append(name[: -len(suffix)])
            if entry.is_dir() and not entry.is_symlink() and (entry / manifest.FILENAME).is_file():
                stems.append(name)
    except OSError:
        return None
    stems = [s for s in stems if _when(s)[0]]
    return str(output_dir / max(stems, key=_when)) if stems else None


def status(output_dir: Optional[Path] = None) -> Dict[str, Any]:
    lock = HostLock()
    holder = lock.probe()
    last = holder or lock.last()
    workdir = last.workdir if last else None
    pid = last.pid if last else None
    if not holder and output_dir is not None:
        found = newest_run(output_dir)
        if found and (not workdir or _when(Path(found).name) > _when(Path(workdir).name)):
            workdir, pid = found, None  # newer than the lock's record (emptied by a reboot)
    archive = None if holder else latest_archive(workdir)
    unpacked = bool(not holder and workdir and archive is None
                    and (Path(workdir) / manifest.FILENAME).is_file())
    return {"version": __version__, "running": holder is not None, "pid": pid,
            "workdir": workdir, "archive": str(archive) if archive else None,
            "unpacked": unpacked}


def print_status(output_dir: Optional[str] = None) -> int:
    print(json.dumps(status(Path(output_dir) if output_dir else None)), flush=True)
    return 0
