"""Bounding the loss of a sudden power-off: the streamed files fdatasync'ed every few seconds.

A node that is fenced without warning (its network failed, so nobody could ask it to
stop) is powered off with what its collectors streamed still in the page cache; the
kernel writes dirty pages back only after ``vm.dirty_expire_centisecs`` (30 s by
default), so exactly the seconds before the fence would be lost. While the run is
armed, :class:`StreamSyncer` asks each collector which files it streams
(:meth:`scoutfs_collect.plugin.api.Collector.streams`) and ``fdatasync``\\ s every one
that changed since the last look, every ``settings.sync_interval`` seconds, in its own
thread: the writers (tcpdump, the kernel log reader) never wait for the disk.

A file seen for the first time at a path (new, or renamed into place by a rotation)
also gets its directory fsync'ed, so its name survives too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from scoutfs_collect.system.paths import fsync_path

log = logging.getLogger("scoutfs_collect.syncer")

#: (instance name, that instance's streams() method)
StreamSource = Tuple[str, Callable[[], Sequence[Path]]]


@dataclasses.dataclass
class SyncStats:
    """What the syncer did, for the run log and the benchmarks."""

    rounds: int = 0
    files_synced: int = 0
    dirs_synced: int = 0
    seconds: float = 0.0  # time spent syncing (in the syncer thread)
    errors: int = 0


@dataclasses.dataclass(frozen=True)
class _Seen:
    ino: int
    size: int
    mtime_ns: int


class StreamSyncer:
    """Every ``interval`` seconds, fdatasync each declared file that changed since last time.

    ``sources`` are asked afresh each round (a pcap ring gains files as it goes). A
    source that raises is logged once and skipped for that round; a file that vanished
    is skipped. ``stop()`` only signals the thread (it never waits on a disk), ``join()``
    waits for it.
    """

    def __init__(self, sources: List[StreamSource], interval: float) -> None:
        self.sources = sources
        self.interval = interval
        self.stats = SyncStats()
        self._seen: Dict[str, _Seen] = {}
        self._failed_sources: set = set()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        if self.interval <= 0 or not self.sources:
            return
        self._thread = threading.Thread(target=self._loop, name="stream-syncer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sync_once()

    def sync_once(self) -> None:
        """One round: look at every declared file, sync the ones that changed."""
        began = time.monotonic()
        for name, streams in self.sources:
            try:
                paths = list(streams())
            except Exception as exc:
                if name not in self._failed_sources:
                    self._failed_sources.add(name)
                    log.error("%s: streams() failed, its files are not synced: %s", name, exc)
                continue
            for path in paths:
                if self._stop.is_set():
                    break
                self._sync_file(Path(path))
        self.stats.rounds += 1
        self.stats.seconds += time.monotonic() - began

    def _sync_file(self, path: Path) -> None:
        key = str(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._error(path, exc)
            return
        try:
            st = os.fstat(fd)
            now = _Seen(st.st_ino, st.st_size, st.st_mtime_ns)
            before = self._seen.get(key)
            if before == now:
                return
            os.fdatasync(fd)
            self.stats.files_synced += 1
            self._seen[key] = now
        except OSError as exc:
            self._error(path, exc)
            return
        finally:
            os.close(fd)
        if before is None or before.ino != now.ino:
            try:
                fsync_path(path.parent)
                self.stats.dirs_synced += 1
            except OSError as exc:
                self._error(path.parent, exc)

    def _error(self, path: Path, exc: OSError) -> None:
        self.stats.errors += 1
        if self.stats.errors <= 3:
            log.error("syncing %s failed: %s", path, exc.strerror or exc)
