"""The ``scoutfs-counters`` collector: scoutfs sysfs counters at start, during and at stop."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from scoutfs_collect import Collector, Problem, hookimpl, option
from scoutfs_collect.scoutfs import sysfs
from scoutfs_collect.scoutfs.sysfs import Snapshot
from scoutfs_collect.system.ringfile import HalfRotatingFile

SERIES = "counters-series.csv"
SERIES_OLD = "counters-series.old.csv"
SERIES_HEADER = ["utc", "elapsed_s", "mount", "counter", "value", "change"]
MAX_PROBLEMS = 100
MB = 1_000_000
JOIN_TIMEOUT = 5.0


class ScoutfsCounters(Collector):
    """Records the scoutfs sysfs state of every mounted scoutfs filesystem: all counters,
    fsid, rid, quorum status, mount and volume options and pending fence requests.

    WHAT IT RECORDS (files in its directory):
      counters-start.json, counters-stop.json  everything read from sysfs at start and
                          at stop, per mount (the stop read happens the instant the
                          trigger fires; the file is written at finalize), except
                          volume_options at stop (a read asks the server, which
                          may not answer on the node being fenced).
      counters-delta.txt  per mount, the counters that moved: start, stop, change
                          (stop - start); counters that appeared, vanished or could not
                          be read are listed below the table.
      counters-series.csv one row per counter that changed since the previous sample:
                          utc, elapsed_s (since start), mount, counter, value (absolute),
                          change (since the previous sample; empty for a first value).
                          A "long" table: open it in a spreadsheet and make a pivot
                          table (rows elapsed_s, columns counter, values value), or
                          filter by counter and chart value. Samples are taken every
                          `interval` seconds and once more at stop.
      mounts.txt          the mounts seen, their ids, leader flag, options and fence
                          requests, and mounts that appeared or vanished during the run.
    The counter list is never assumed: each read lists the directory again, so older
    and newer modules, unmounts and counters that vanish mid-read are handled. Such
    events are logged and listed in the manifest details; they are never fatal.

    WHAT IT CHANGES ON THE SYSTEM: nothing (it only reads /sys/fs/scoutfs).

    OVERHEAD: one read of ~200 small sysfs files per mount every `interval` seconds
    (about 1-2 ms of CPU per mount per read, measured); the stop read is reported in the
    manifest as stop_read_seconds. counters-series.csv grows only with counters that
    move and is capped at `max_series_mb` (the oldest rows are dropped).

    REQUIREMENTS: the scoutfs kernel module loaded and at least one scoutfs filesystem
    mounted (directories f.*.r.* under /sys/fs/scoutfs).
    """

    type_name = "scoutfs-counters"

    @dataclasses.dataclass
    class Options:
        sysfs_root: str = option(sysfs.DEFAULT_ROOT, "Where the scoutfs sysfs tree is.")
        interval: float = option(10.0, "Seconds between counter samples (0: start/stop only).")
        max_series_mb: int = option(32, "Cap of counters-series.csv in MB (oldest rows dropped).")

    def __init__(self, ctx: Any, options: Any) -> None:
        super().__init__(ctx, options)
        self.root = options.sysfs_root
        self._stop_event = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._start: Optional[Snapshot] = None
        self._stop: Optional[Snapshot] = None
        self._series: Optional[HalfRotatingFile] = None
        self._last: Dict[str, Dict[str, int]] = {}
        self._last_time = 0.0
        self._samples = 0
        self._rows = 0
        self._rotated_at: Optional[float] = None
        self._seen: List[str] = []
        self._appeared: List[Dict[str, Any]] = []
        self._vanished: List[Dict[str, Any]] = []
        self._problems: List[Dict[str, Any]] = []
        self._reported: Set[Tuple[str, str, str]] = set()

    @property
    def samples(self) -> int:
        """Samples recorded so far (periodic ones and the one at stop)."""
        return self._samples

    # ----------------------------------------------------------------- lifecycle
    def preflight(self) -> List[Problem]:
        problems = []
        if self.options.interval < 0:
            problems.append(
                Problem(
                    f"interval must be 0 or more, not {self.options.interval}",
                    "set interval: 10 (or 0 to sample only at start and stop)",
                )
            )
        if self.options.max_series_mb < 1:
            problems.append(Problem("max_series_mb must be at least 1", "set max_series_mb: 32"))
        problems.extend(sysfs.root_problems(self.root))
        return problems

    def disk_estimate(self) -> int:
        mounts = max(1, len(sysfs.list_mounts(self.root)))
        return self.options.max_series_mb * MB + mounts * 2 * 64 * 1024 + 64 * 1024

    def start(self) -> None:
        snap = sysfs.snapshot(self.root)
        self._start = snap
        self._note_mounts(snap, events=True)
        self._write_json("counters-start.json", snap)
        self._last = {name: dict(m.counters.values) for name, m in snap.mounts.items()}
        self._last_time = snap.time
        self._series = HalfRotatingFile(self.ctx.workdir / SERIES, self.ctx.workdir / SERIES_OLD,
                                        self.options.max_series_mb * MB,
                                        header=(",".join(SERIES_HEADER) + "\n").encode())
        self.log.info(
            "%s: %d mount(s), start read took %.1f ms",
            self.ctx.name,
            len(snap.mounts),
            snap.read_seconds * 1000,
        )
        if self.options.interval > 0:
            self._thread = threading.Thread(
                target=self._sample_loop, name=f"sampler-{self.ctx.name}", daemon=True
            )
            self._thread.start()

    def streams(self) -> List[Path]:
        """The counter series (flushed after each sample) and its rotated half."""
        return [self.ctx.workdir / SERIES, self.ctx.workdir / SERIES_OLD]

    def stop(self) -> None:
        """The trigger instant: read the state the trigger saw and end the sampling.

        Only the sysfs read happens here (the values at the trigger are the point of
        counters-stop.json); the sampler is told to stop, not waited for. The sample
        row, the JSON file and the details are written by finalize. Volume options are
        read at start only: reading one asks the server, and on the node being fenced
        (its server unreachable) that read blocks until the phase timeout.
        """
        self._stop = sysfs.snapshot(self.root, volume_options=False)
        self._stop_event.set()

    def _record_stop(self) -> None:
        """Everything stop() left for later: wait for the sampler, then the last series
        row, counters-stop.json, the time window and the details."""
        snap = self._stop
        if snap is None:
            return
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT)
            if self._thread.is_alive():  # a sysfs read hangs: keep the snapshot, go on
                self.ctx.fail(f"counter sampler did not stop within {JOIN_TIMEOUT} s")
        if self._lock.acquire(timeout=JOIN_TIMEOUT):
            try:
                series_open = self._series is not None and not self._series.closed
                if self._start is not None and series_open and snap.time > self._last_time:
                    counters = {n: m.counters for n, m in snap.mounts.items()}
                    self._record_sample(snap.time, counters)
            finally:
                self._lock.release()
        if self._series is not None:
            self._series.close()
        self._note_mounts(snap, events=False)
        self._write_json("counters-stop.json", snap)
        first = self._start.time if self._start else None
        self.ctx.set_window(first, snap.time)
        self.log.info("%s: stop read took %.1f ms", self.ctx.name, snap.read_seconds * 1000)

    def cleanup(self) -> None:
        """End the sampler thread and close the series file if the run ended before stop()."""
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT)
        if self._series is not None:
            self._series.close()

    def finalize(self) -> None:
        workdir = self.ctx.workdir
        self._record_stop()
        self._merge_series()
        if self._start is not None:
            text = format_delta(self._start, self._stop)
            (workdir / "counters-delta.txt").write_text(text)
        (workdir / "mounts.txt").write_text(self._mounts_text())
        self._update_details()

    # ----------------------------------------------------------------- sampling
    def _sample_loop(self) -> None:
        try:
            while not self._stop_event.wait(self.options.interval):
                now = time.time()
                counters = sysfs.read_all_counters(self.root)
                with self._lock:
                    if self._stop_event.is_set():
                        return
                    self._record_sample(now, counters)
        except Exception as exc:  # visible, never silent
            self.ctx.fail(f"counter sampler stopped: {type(exc).__name__}: {exc}")

    def _record_sample(self, now: float, counters: Dict[str, sysfs.CounterValues]) -> None:
        """Append the counters that changed since the previous sample (caller holds _lock)."""
        started = self._start.time if self._start else now
        utc, elapsed = sysfs.utc_text(now), f"{now - started:.3f}"
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for mount in sorted(set(self._last) - set(counters)):
            self._event(self._vanished, mount, now, "mount vanished (unmounted?)")
            del self._last[mount]
        for mount, read in counters.items():
            if read.missing:
                if mount in self._last:
                    self._event(self._vanished, mount, now, "mount vanished while it was read")
                    del self._last[mount]
                continue
            previous = self._last.get(mount)
            if previous is None:
                self._event(self._appeared, mount, now, "mount appeared")
                previous = self._last[mount] = {}
            for name, problem in read.problems.items():
                self._problem(mount, name, problem, now)
            for name in [n for n in previous if n not in read.values]:
                if name not in read.problems:
                    self._problem(mount, name, "vanished from the counters directory", now)
                del previous[name]
            for name, value in read.values.items():
                old = previous.get(name)
                if old == value:
                    continue
                change = "" if old is None else value - old
                writer.writerow([utc, elapsed, mount, name, value, change])
                previous[name] = value
                self._rows += 1
        self._samples += 1
        self._last_time = now
        text = buf.getvalue()
        if text and self._series.write(text.encode()):  # the current half became the old one
            self._rotated_at = now

    def _merge_series(self) -> None:
        old, current = self.ctx.workdir / SERIES_OLD, self.ctx.workdir / SERIES
        if not old.exists():
            return
        merged = self.ctx.workdir / (SERIES + ".tmp")
        with open(merged, "w") as out:
            with open(old) as f:
                out.writelines(f)
            if current.exists():
                with open(current) as f:
                    next(f, None)  # its header
                    out.writelines(f)
        os.replace(merged, current)
        old.unlink()

    # ----------------------------------------------------------------- records
    def _event(self, bucket: List[Dict[str, Any]], mount: str, now: float, what: str) -> None:
        bucket.append({"mount": mount, "time": round(now, 3), "what": what})
        self.log.warning("%s: %s: %s", self.ctx.name, mount, what)
        if mount not in self._seen:
            self._seen.append(mount)

    def _problem(self, mount: str, counter: str, problem: str, now: float) -> None:
        key = (mount, counter, problem.split(":")[0])
        if key in self._reported:
            return
        self._reported.add(key)
        self.log.warning("%s: %s: counter %s: %s", self.ctx.name, mount, counter, problem)
        if len(self._problems) < MAX_PROBLEMS:
            self._problems.append(
                {"mount": mount, "counter": counter, "problem": problem, "time": round(now, 3)}
            )

    def _note_mounts(self, snap: Snapshot, events: bool) -> None:
        """Remember the mounts and counter problems of a snapshot; ``events``: also log
        mounts that vanished while it was read (stop leaves that to _record_sample)."""
        for name, mount in snap.mounts.items():
            if name not in self._seen:
                self._seen.append(name)
            if events and mount.error:
                self._event(self._vanished, name, snap.time, mount.error)
            for counter, problem in mount.counters.problems.items():
                self._problem(name, counter, problem, snap.time)

    def _write_json(self, filename: str, snap: Snapshot) -> None:
        path = self.ctx.workdir / filename
        tmp = path.with_name(filename + ".tmp")
        tmp.write_text(json.dumps(snap.as_dict(), indent=1, sort_keys=False) + "\n")
        os.replace(tmp, path)

    def _update_details(self) -> None:
        names: Set[str] = set()
        for snap in (self._start, self._stop):
            for mount in snap.mounts.values() if snap else ():
                names.update(mount.counters.values)
                names.update(mount.counters.problems)
        self.ctx.details.update(
            {
                "sysfs_root": self.root,
                "mounts_seen": list(self._seen),
                "counter_count": len(names),
                "samples": self._samples,
                "series_rows": self._rows,
                "series_dropped_before": self._rotated_at,
                "start_read_seconds": round(self._start.read_seconds, 6) if self._start else None,
                "stop_read_seconds": round(self._stop.read_seconds, 6) if self._stop else None,
                "mounts_appeared": self._appeared,
                "mounts_vanished": self._vanished,
                "read_problems": self._problems,
            }
        )

    def _mounts_text(self) -> str:
        lines = [f"scoutfs mounts under {self.root}", ""]
        start = self._start.mounts if self._start else {}
        stop = self._stop.mounts if self._stop else {}
        for name in self._seen:
            state = stop.get(name) or start.get(name)
            where = [w for w, snap in (("start", start), ("stop", stop)) if name in snap]
            lines.append(f"{name}  (present at: {', '.join(where) or 'neither snapshot'})")
            if state is not None:
                lines.append(
                    f"  fsid {state.fsid}  rid {state.rid}  format_version "
                    f"{state.format_version}  data_device {state.data_device_maj_min}"
                )
                lines.append(f"  quorum leader: {state.quorum.get('is_leader', '?')}")
                for title, values in (
                    ("mount options", state.mount_options),
                    ("volume options (at start)", start[name].volume_options if name in start else {}),
                ):
                    shown = " ".join(f"{k}={v}" for k, v in values.items()) or "(none)"
                    lines.append(f"  {title}: {shown}")
                for req in state.fence.values():
                    lines.append(f"  {req.describe()} fenced={req.fenced} error={req.error}")
            lines.append("")
        for title, events in (("appeared", self._appeared), ("vanished", self._vanished)):
            for ev in events:
                lines.append(
                    f"{title} during the run: {ev['mount']} at {sysfs.utc_text(ev['time'])} UTC: {ev['what']}"
                )
        return "\n".join(lines).rstrip("\n") + "\n"


def format_delta(start: Snapshot, stop: Optional[Snapshot]) -> str:
    """The human-readable table of counters that moved between two snapshots."""
    end = stop if stop is not None else start
    lines = [
        "scoutfs counters: change between start and stop (only counters that moved)",
        f"start {sysfs.utc_text(start.time)} UTC   stop {sysfs.utc_text(end.time)} UTC   "
        f"({end.time - start.time:.1f} s)",
        "",
    ]
    for name in sorted(set(start.mounts) | set(end.mounts)):
        lines.extend(_mount_delta(name, start.mounts.get(name), end.mounts.get(name)))
        lines.append("")
    if not start.mounts and not end.mounts:
        lines.append("no scoutfs mounts were found")
    return "\n".join(lines).rstrip("\n") + "\n"


def _mount_delta(name: str, a: Optional[sysfs.MountState], b: Optional[sysfs.MountState]) -> List[str]:
    head = b or a
    assert head is not None
    lines = [f"{name}  (fsid {head.fsid}, rid {head.rid})"]
    if b is None or b.counters.missing:
        return lines + ["  vanished during the run (unmounted?): no stop values"]
    if a is None or a.counters.missing:
        lines.append("  appeared during the run: changes are counted from 0")
    fresh = a is None or a.counters.missing
    before = {} if fresh else a.counters.values
    after = b.counters.values
    rows = []
    for counter in sorted(after) if fresh else sorted(set(before) & set(after)):
        old, new = before.get(counter, 0), after[counter]
        if new != old:
            rows.append((counter, str(old), str(new), f"{new - old:+d}"))
    if rows:
        width = max(len("counter"), *(len(r[0]) for r in rows))
        num = max(12, *(len(x) for r in rows for x in r[1:]))
        lines.append(f"  {'counter':<{width}}  {'start':>{num}}  {'stop':>{num}}  {'change':>{num}}")
        lines.extend(f"  {r[0]:<{width}}  {r[1]:>{num}}  {r[2]:>{num}}  {r[3]:>{num}}" for r in rows)
    total = len(set(before) | set(after))
    lines.append(f"  {len(rows)} of {total} counters changed")
    if not fresh:
        appeared = sorted(set(after) - set(before) - set(a.counters.problems))
        vanished = sorted(set(before) - set(after) - set(b.counters.problems))
        if appeared:
            lines.append("  appeared during the run: " + ", ".join(f"{c}={after[c]}" for c in appeared))
        if vanished:
            lines.append("  vanished during the run: " + ", ".join(vanished))
    for label, state in (("start", a), ("stop", b)):
        for counter, problem in sorted((state.counters.problems if state else {}).items()):
            lines.append(f"  unreadable at {label}: {counter}: {problem}")
    return lines


@hookimpl
def scoutfs_collect_register(register):
    register.add_collector(ScoutfsCounters)
