"""The ``counter`` trigger: fires when a scoutfs counter rises by `threshold` within `window`."""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from typing import Deque, Dict, List, Optional, Set, Tuple

from scoutfs_collect import FireCallback, Problem, ThreadedTrigger, Wakeup, did_you_mean, hookimpl, option
from scoutfs_collect.scoutfs import sysfs

Sample = Tuple[float, int]  # (monotonic time, value)


class CounterTrigger(ThreadedTrigger):
    """Fires when one scoutfs counter (a file in /sys/fs/scoutfs/f.*.r.*/counters/) rises
    by at least `threshold` within `window` seconds, e.g. `block_cache_alloc_failure`
    rising at all (threshold 1). The reason names the counter, the increase, the window
    and the mount(s), e.g. "counter block_cache_alloc_failure rose by 3 (threshold 1)
    within 60 s on f.abc123.r.def456".

    The counter is read every `interval` seconds; the increase is the newest value minus
    the oldest value read within the last `window` seconds, so only increases after the
    trigger is armed count. With `per_mount` (default) each mount is judged on its own;
    otherwise the increases of all mounts are added up. A value that goes down (the
    filesystem was remounted) starts that mount's history again. Mounts that appear
    later are watched too; a value that cannot be read is logged once and skipped.

    WHAT IT CHANGES ON THE SYSTEM: nothing (it only reads sysfs).

    OVERHEAD: one small sysfs file read per mount every `interval` seconds, and one
    listdir of the sysfs root; memory for window/interval samples per mount.

    REQUIREMENTS: the scoutfs kernel module loaded and a mounted scoutfs filesystem that
    has the named counter.
    """

    type_name = "counter"

    @dataclasses.dataclass
    class Options:
        sysfs_root: str = option(sysfs.DEFAULT_ROOT, "Where the scoutfs sysfs tree is.")
        counter: str = option("", "Name of the scoutfs counter to watch (required).")
        threshold: int = option(1, "Fire when the counter rose by at least this much.")
        window: float = option(60.0, "Seconds over which the increase is measured.")
        interval: float = option(1.0, "Seconds between two reads of the counter.")
        per_mount: bool = option(True, "Judge each mount alone (false: sum over all mounts).")

    def preflight(self) -> List[Problem]:
        opts = self.options
        root = opts.sysfs_root
        problems = []
        if opts.threshold < 1:
            problems.append(
                Problem(
                    f"option 'threshold' must be 1 or more, not {opts.threshold}",
                    "set threshold: 1 (fire on any increase)",
                )
            )
        for name, value in (("window", opts.window), ("interval", opts.interval)):
            if value <= 0:
                problems.append(
                    Problem(
                        f"option '{name}' must be more than 0, not {value:g}",
                        f"set {name} to a positive number of seconds",
                    )
                )
        if 0 < opts.window < opts.interval:
            problems.append(
                Problem(
                    f"window ({opts.window:g} s) is shorter than interval "
                    f"({opts.interval:g} s): increases are measured between "
                    "two reads only",
                    "make interval smaller than window",
                    fatal=False,
                )
            )
        if not opts.counter:
            problems.append(
                Problem(
                    "option 'counter' is empty: name the scoutfs counter to watch",
                    f"set counter: NAME (the names are the files in {root}/f.*.r.*/counters/)",
                )
            )
        found = sysfs.root_problems(root)
        problems.extend(found)
        if found:
            return problems
        mounts = sysfs.list_mounts(root)
        if opts.counter and not self._mounts_with_counter(mounts):
            names: Set[str] = set()
            for mount in mounts:
                try:
                    names.update(os.listdir(os.path.join(root, mount, "counters")))
                except OSError:
                    pass
            hint = did_you_mean(opts.counter, sorted(names))
            problems.append(
                Problem(
                    f"no mounted scoutfs filesystem has a counter '{opts.counter}'{hint}",
                    f"pick a name from ls {root}/{mounts[0]}/counters/",
                )
            )
        return problems

    def _mounts_with_counter(self, mounts: List[str]) -> List[str]:
        root = self.options.sysfs_root
        return [m for m in mounts if os.path.exists(os.path.join(root, m, "counters", self.options.counter))]

    def read(self) -> Dict[str, Optional[int]]:
        """mount -> counter value now (None: unreadable or not a number)."""
        out: Dict[str, Optional[int]] = {}
        root, name = self.options.sysfs_root, self.options.counter
        for mount in sysfs.list_mounts(root):
            value, why = sysfs.read_counter(os.path.join(root, mount, "counters", name))
            if why == sysfs.VANISHED:
                continue  # this mount has no such counter (or was just unmounted)
            if why is not None:
                self._note(mount, f"counter {name}: {why}")
            out[mount] = value
        return out

    def _note(self, mount: str, what: str) -> None:
        if (mount, what) not in self._noted:
            self._noted.add((mount, what))
            self.log.warning("%s: %s: %s", self.ctx.name, mount, what)
            self.ctx.details.setdefault("read_problems", []).append(f"{mount}: {what}")

    def arm(self, fire: FireCallback) -> None:
        self._noted: Set[Tuple[str, str]] = set()
        self._history: Dict[str, Deque[Sample]] = {}
        self._max_increase = 0
        self.samples = 0
        self._take_sample()  # the baseline, synchronously: increases count from now on
        self.ctx.details["baseline"] = {m: h[-1][1] for m, h in self._history.items()}
        super().arm(fire)

    def _take_sample(self) -> Dict[str, int]:
        """Read once, update the per-mount histories; mount -> increase within window."""
        now = time.monotonic()
        increases: Dict[str, int] = {}
        values = self.read()
        for mount in list(self._history):
            if mount not in values:
                del self._history[mount]  # unmounted; a later mount starts afresh
        for mount, value in values.items():
            if value is None:
                continue
            history = self._history.setdefault(mount, collections.deque())
            if history and value < history[-1][1]:
                history.clear()  # went down: remounted or reset
            history.append((now, value))
            while len(history) > 1 and history[0][0] < now - self.options.window:
                history.popleft()
            increases[mount] = value - history[0][1]
        self.samples += 1
        return increases

    def watch(self, fire: FireCallback, wakeup: Wakeup) -> None:
        opts = self.options
        while not wakeup.wait(opts.interval):
            increases = self._take_sample()
            if not increases:
                continue
            if opts.per_mount:
                increase, mount = max((inc, m) for m, inc in increases.items())
                mounts, where = [mount], mount
            else:
                increase, mounts = sum(increases.values()), sorted(increases)
                where = "all mounts (" + ", ".join(mounts) + ")"
            self._max_increase = max(self._max_increase, increase)
            if increase >= opts.threshold:
                reason = (
                    f"counter {opts.counter} rose by {increase} (threshold "
                    f"{opts.threshold}) within {opts.window:g} s on {where}"
                )
                self.ctx.details["fired"] = {"increase": increase, "mounts": mounts}
                fire(reason)
                return

    def disarm(self) -> None:
        super().disarm()
        self.ctx.details["max_increase_seen"] = getattr(self, "_max_increase", 0)


@hookimpl
def scoutfs_collect_register(register):
    register.add_trigger(CounterTrigger)
