"""The ``scoutfs-fence`` trigger: fires when the quorum leader publishes a new fence request."""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Set, Tuple

from scoutfs_collect import FireCallback, Problem, ThreadedTrigger, Wakeup, hookimpl, option
from scoutfs_collect.scoutfs import sysfs

Key = Tuple[str, str]  # (mount name, rid)


class ScoutfsFence(ThreadedTrigger):
    """Fires when a NEW fence request appears under any scoutfs mount: a directory
    /sys/fs/scoutfs/f.*.r.*/fence/<rid>/, which the quorum leader creates when it decides
    to fence a mount (the node may be powered off seconds later). The reason names the
    mount, the rid, the address and the kernel's reason, e.g.
    "fence request for rid 0123456789abcdef (ipv4 10.0.0.2, reason client_reconnect)
    on f.abc123.r.def456".

    Requests already present when the trigger is armed are recorded in the manifest
    details but do not fire. Mounts that appear later are watched too. Fence requests
    exist only on the quorum leader: run this on the server node(s).

    WHAT IT CHANGES ON THE SYSTEM: nothing (it only lists sysfs directories).

    OVERHEAD: sysfs gives no inotify events for directories the kernel creates, so this
    polls: every `interval` seconds one listdir of the sysfs root and one of each
    mount's fence/ directory (a few microseconds each; at the default 0.5 s, about 4
    listdir calls per second per mount). A request is noticed at most `interval`
    seconds after it appears; the userspace fencing daemon polls every 1-2 s.

    REQUIREMENTS: the scoutfs kernel module loaded (/sys/fs/scoutfs exists).
    """

    type_name = "scoutfs-fence"

    @dataclasses.dataclass
    class Options:
        sysfs_root: str = option(sysfs.DEFAULT_ROOT, "Where the scoutfs sysfs tree is.")
        interval: float = option(0.5, "Seconds between two looks at the fence directories.")

    def preflight(self) -> List[Problem]:
        root = self.options.sysfs_root
        problems = []
        if self.options.interval <= 0:
            problems.append(
                Problem(f"interval must be more than 0, not {self.options.interval}", "set interval: 0.5")
            )
        problems.extend(sysfs.root_problems(root, mounts_required=False))
        return problems

    def _scan(self, mounts: List[str]) -> Dict[Key, str]:
        """(mount, rid) -> mount directory for every pending fence request of ``mounts``."""
        root = self.options.sysfs_root
        found: Dict[Key, str] = {}
        for mount in mounts:
            mount_dir = os.path.join(root, mount)
            for rid in sysfs.list_fence_requests(mount_dir):
                found[(mount, rid)] = mount_dir
        return found

    def arm(self, fire: FireCallback) -> None:
        # The baseline is taken here, synchronously: a request that appears after arm()
        # returns is new, whatever the watcher thread's timing.
        self._known: Set[Key] = set()
        self.scans = 0
        mounts = sysfs.list_mounts(self.options.sysfs_root)
        present = []
        for (mount, rid), mount_dir in sorted(self._scan(mounts).items()):
            self._known.add((mount, rid))
            present.append(sysfs.read_fence_request(mount_dir, rid).as_dict())
        self.ctx.details["requests_at_arm"] = present
        self.ctx.details["mounts_at_arm"] = mounts
        self._watched: Set[str] = set(mounts)
        if present:
            self.log.info(
                "%s: %d fence request(s) already pending at arm time (ignored)", self.ctx.name, len(present)
            )
        super().arm(fire)

    def watch(self, fire: FireCallback, wakeup: Wakeup) -> None:
        while not wakeup.wait(self.options.interval):
            mounts = sysfs.list_mounts(self.options.sysfs_root)
            now = self._scan(mounts)
            self.scans += 1
            self._watched.update(mounts)
            new = sorted(set(now) - self._known)
            if new:
                mount, rid = new[0]
                request = sysfs.read_fence_request(now[(mount, rid)], rid)
                self.ctx.details["fired_by"] = request.as_dict()
                if len(new) > 1:
                    self.ctx.details["also_new"] = [f"{m}/{r}" for m, r in new[1:]]
                fire(request.describe())
                return
            self._known = set(now)  # a served request whose rid comes back is new again

    def disarm(self) -> None:
        super().disarm()
        self.ctx.details["mounts_watched"] = sorted(getattr(self, "_watched", ()))


@hookimpl
def scoutfs_collect_register(register):
    register.add_trigger(ScoutfsFence)
