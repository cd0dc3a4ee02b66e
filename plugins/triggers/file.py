"""Trigger ``file``: fire when a file appears (a site's own tooling asks for the dump)."""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import stat
from typing import List, Optional

from scoutfs_collect import FireCallback, Problem, ThreadedTrigger, Wakeup, hookimpl, option

log = logging.getLogger(__name__)

IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_IGNORED = 0x8000  # the watch is gone (directory removed or unmounted)
_EVENT_HEADER = 16  # struct inotify_event: int wd; u32 mask, cookie, len; char name[len]
NOTE_MAX = 4096  # read a note from the file only if it is this small
FALLBACK_INTERVAL = 0.5  # seconds between checks when there is no inotify watch


class DirectoryWatch:
    """inotify on one directory for IN_CREATE | IN_MOVED_TO, through libc (no dependency)."""

    def __init__(self, directory: str) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        wd = libc.inotify_add_watch(fd, os.fsencode(directory), IN_CREATE | IN_MOVED_TO)
        if wd < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}")
        self.fd = fd

    def drain(self) -> bool:
        """Read the pending events; True while the watch still exists."""
        alive = True
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return alive
            pos = 0
            while pos + _EVENT_HEADER <= len(data):
                mask = int.from_bytes(data[pos + 4 : pos + 8], "little")
                length = int.from_bytes(data[pos + 12 : pos + 16], "little")
                if mask & IN_IGNORED:
                    alive = False
                pos += _EVENT_HEADER + length

    def close(self) -> None:
        os.close(self.fd)


def first_line(path: str) -> str:
    """The first line of a small regular file (a note from whoever created it), or ''."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > NOTE_MAX:
            return ""
        with open(path, "rb") as f:
            line = f.read(NOTE_MAX).decode("utf-8", "replace").split("\n", 1)[0].strip()
    except OSError:
        return ""
    return line[:200]


class FileTrigger(ThreadedTrigger):
    """Fires when the file `path` appears: lets a site's own tooling or an operator
    ask for the dump (`touch /run/scoutfs-collect.dump`). The reason is
    "file PATH appeared", followed by the first line of the file if it is small,
    so `echo "node3 hung" > PATH.tmp && mv PATH.tmp PATH` passes a note along.

    Changes on the system: nothing; it never removes `path` (remove it before the
    next run, preflight refuses to arm while it exists).
    Overhead: none: an inotify watch on the parent directory wakes it at once;
    where inotify is not available (or the directory is removed) it checks every
    0.5 s.
    Requirements: the parent directory of `path` exists.
    """

    type_name = "file"

    @dataclasses.dataclass
    class Options:
        path: str = option("", "File whose appearance fires the trigger (required).")

    def preflight(self) -> List[Problem]:
        path = self.options.path
        if not path:
            return [Problem("option 'path' is empty", fix="set path: to a file name, e.g. "
                            "/run/scoutfs-collect.dump")]
        problems = []
        if os.path.lexists(path):
            problems.append(Problem(f"{path} already exists, the trigger would fire at once",
                                    fix=f"remove it first: rm {path}"))
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            problems.append(Problem(f"directory {parent} (of option 'path') does not exist",
                                    fix=f"mkdir -p {parent}, or choose another path"))
        return problems

    def watch(self, fire: FireCallback, wakeup: Wakeup) -> None:
        path = os.path.abspath(self.options.path)
        inotify: Optional[DirectoryWatch] = None
        try:
            inotify = DirectoryWatch(os.path.dirname(path))
        except OSError as exc:
            log.warning("%s: no inotify (%s); checking every %g s",
                        self.ctx.name, exc, FALLBACK_INTERVAL)
        self.ctx.details["method"] = "inotify" if inotify else "poll"
        try:
            while not wakeup.is_set():
                if os.path.lexists(path):  # checked after the watch exists: no race
                    note = first_line(path)
                    fire(f"file {path} appeared" + (f": {note}" if note else ""))
                    return
                if inotify is None:
                    wakeup.wait(FALLBACK_INTERVAL)
                    continue
                wakeup.wait_readable([inotify.fd])
                if not inotify.drain():  # directory gone: fall back to checking
                    inotify.close()
                    inotify = None
                    self.ctx.details["method"] = "poll"
        finally:
            if inotify is not None:
                inotify.close()


@hookimpl
def scoutfs_collect_register(register):
    register.add_trigger(FileTrigger)
