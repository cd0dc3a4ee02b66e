"""What a run writes about itself into its work dir, and the packing of that work dir:
the manifest (rewritten at each milestone), the run log, and the archive at the end."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from scoutfs_collect.archive import manifest
from scoutfs_collect.archive import write as archive
from scoutfs_collect.core.checks import packing_floor
from scoutfs_collect.core.events import EventLog
from scoutfs_collect.core.instances import PluginInstance
from scoutfs_collect.core.profile import Settings
from scoutfs_collect.system.paths import fsync_tree
from scoutfs_collect.ui.console import Console

log = logging.getLogger("scoutfs_collect")
RUN_LOG = "scoutfs-collect.log"


def write_manifest(workdir: Path, instances: Sequence[PluginInstance], exit_status: Optional[int],
                   **run: Any) -> None:
    """manifest.json of the run so far (``exit_status`` None while it goes on); ``run``
    holds argv, profile, target, times, trigger and notes (see manifest.assemble)."""
    for inst in instances:
        inst.record.details = dict(inst.ctx.details)
        inst.record.window = inst.ctx.window
    doc = manifest.assemble(plugins={inst.name: inst.record for inst in instances},
                            exit_status=exit_status, **run)
    manifest.write(workdir, doc)


def make_durable(workdir: Path, events: EventLog, event: Optional[str]) -> Optional[float]:
    """fsync every file and directory below ``workdir``; then emit ``event`` (if any) and
    return when that was. A failure is logged and an ``error`` event, never raised."""
    try:
        count = fsync_tree(workdir)
    except OSError as exc:
        log.error("fsync of %s failed: %s", workdir, exc)
        events.emit("error", plugin="core", message=f"fsync failed: {exc}")
        return None
    log.debug("fsynced %d files", count)
    if not event:
        return None
    when = time.time()
    events.emit(event, files=count)
    return when


def attach_run_log(workdir: Path) -> logging.Handler:
    """Everything logged from now on also goes to WORKDIR/scoutfs-collect.log (DEBUG)."""
    handler = logging.FileHandler(workdir / RUN_LOG, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s.%(msecs)03d %(levelname)s %(name)s [%(threadName)s] %(message)s",
        "%Y-%m-%dT%H:%M:%S"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    return handler


def detach_run_log(handler: Optional[logging.Handler]) -> None:
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()


def pack(workdir: Path, output_dir: Path, settings: Settings, console: Console,
         events: EventLog) -> Optional[Path]:
    """Pack the work dir into the archive; None (the work dir kept and named, an ``error``
    event) if packing failed or was interrupted. The work dir is removed after success
    unless ``settings.keep_workdir``."""
    try:
        path = archive.pack(workdir, output_dir, settings.compression,
                            progress=lambda d, t: console.progress("packing", d, t),
                            min_free_bytes=packing_floor(settings.min_free_mb))
    except KeyboardInterrupt:
        console.end_status()
        log.error("packing interrupted; the work dir is kept: %s", workdir)
        log.error("finish it with: scoutfs-collect pack %s", workdir)
        events.emit("error", plugin="core", message="packing interrupted")
        return None
    except Exception as exc:
        console.end_status()
        log.error("cannot write the archive: %s; the work dir is kept: %s", exc, workdir)
        log.error("finish it later with: scoutfs-collect pack %s", workdir)
        events.emit("error", plugin="core", message=f"archive failed: {exc}")
        return None
    console.end_status()
    events.emit("archive", path=str(path))
    return path


def remove_workdir(path: Path) -> None:
    """Remove a work dir we created (rmtree never follows symlinks out of it)."""
    shutil.rmtree(path, ignore_errors=True)


def file_lists(collectors: Sequence[PluginInstance]) -> None:
    """Each collector's files with their sizes and sha256, into its manifest record."""
    for inst in collectors:
        try:
            inst.record.files = archive.sha256_files(inst.ctx.workdir)
        except OSError as exc:
            inst.record.record_error(f"listing files: {exc}")

