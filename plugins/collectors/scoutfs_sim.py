"""The ``scoutfs-sim`` collector: a simulated scoutfs sysfs tree for demos (records nothing)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from scoutfs_collect import Collector, Problem, did_you_mean, hookimpl, option
from scoutfs_collect.demo import fixture

MARKER = ".scoutfs-sim"
REFUSED_PREFIXES = ("/sys", "/proc", "/dev", "/run", "/etc", "/boot", "/usr")
DEFAULT_COUNTERS = [
    "net_send_messages",
    "net_recv_messages",
    "net_send_bytes",
    "net_recv_bytes",
    "lock_lock",
    "lock_unlock",
    "item_lookup",
    "btree_lookup",
    "block_cache_access_update",
    "trans_commit_timer",
    "quorum_send_heartbeat",
    "quorum_recv_heartbeat",
]
README = """\
This directory comes from the scoutfs-sim collector: a SIMULATION for demos and tests.
The scoutfs kernel module was not loaded; scoutfs-sim built a fake scoutfs sysfs tree
at {root} with {mounts} mount(s), raised some counters every {interval:g} s{fence}, and
removed the tree at the end. Data recorded from {root} by other plugins in this run
(scoutfs-counters, scoutfs-fence, counter) describes that simulation, not a real
filesystem.
"""


class ScoutfsSim(Collector):
    """DEMO ONLY: simulates a mounted scoutfs filesystem so that the scoutfs plugins
    (scoutfs-counters, scoutfs-fence, counter) can be shown and tested on a machine where
    the scoutfs kernel module cannot be loaded. It records nothing of the system.

    It builds a scoutfs-like sysfs tree (the layout of /sys/fs/scoutfs: f.*.r.* mount
    directories with fsid, rid, counters/, fence/, quorum/, options) at `sysfs_root`;
    point the other scoutfs plugins' `sysfs_root` at the same path. The tree is built in
    the `prepare` phase, before any preflight (the other plugins' preflights look for it
    there), also under `scoutfs-collect check`, and removed at cleanup. While the run records it raises
    the `counters` by small random amounts every `interval` seconds and, if
    `fence_after` is set, publishes one fence request that many seconds after start, so
    the scoutfs-fence trigger fires. Its own output is only README.txt saying that the
    run was a simulation.

    WHAT IT CHANGES ON THE SYSTEM: creates `sysfs_root` (default
    /tmp/scoutfs-collect-demo-sysfs) and removes it at the end of the run (or check). It refuses
    paths under /sys, /proc, /dev, /run, /etc, /boot, /usr and any existing directory it
    did not make (its own leftovers, marked by a .scoutfs-sim file, are replaced).

    OVERHEAD: a few small file writes every `interval` seconds (and one UDP datagram to a
    loopback target with `heartbeat`).

    REQUIREMENTS: none.
    """

    type_name = "scoutfs-sim"

    @dataclasses.dataclass
    class Options:
        sysfs_root: str = option(
            "/tmp/scoutfs-collect-demo-sysfs", "Where to build the simulated scoutfs sysfs tree."
        )
        mounts: int = option(1, "Number of simulated mounts (the first is quorum leader).")
        interval: float = option(0.5, "Seconds between two rounds of counter increases.")
        fence_after: float = option(
            0.0, "Publish one fence request this many seconds after start (0: never)."
        )
        fence_ipv4: str = option("127.0.0.2", "The address named in the fence request.")
        counters: List[str] = option(DEFAULT_COUNTERS, "Counters raised while running.")
        heartbeat: bool = option(
            False,
            "Also send a small UDP datagram to the target IP:PORT every interval, like scoutfs "
            "heartbeats, so a packet capture has traffic (loopback targets only).",
        )

    def __init__(self, ctx: Any, options: Any) -> None:
        super().__init__(ctx, options)
        self.root = Path(options.sysfs_root)
        self._mounts: List[Path] = []
        self._stop_event = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._bumps = 0
        self._fence: Optional[Dict[str, str]] = None
        self._notes: List[Problem] = []

    def prepare(self) -> None:
        """Build the simulated tree before any preflight looks for it (also under check;
        cleanup removes it)."""
        opts = self.options
        if any(p.fatal for p in self._option_problems()):
            return  # preflight reports why
        if self.root.exists():
            if not (self.root / MARKER).exists():
                return  # not ours: preflight refuses it
            fixture.remove_tree(self.root)
            self._notes.append(Problem(f"removed a leftover demo tree at {self.root}", fatal=False))
        self._mounts = fixture.build(self.root, opts.mounts)
        (self.root / MARKER).write_text(f"made by scoutfs-sim, pid {os.getpid()}\n")
        self._notes.append(Problem(
            f"built demo scoutfs sysfs fixture at {self.root} ({opts.mounts} mount(s))", fatal=False))

    def preflight(self) -> List[Problem]:
        problems = self._option_problems()
        if self.options.heartbeat and not ipaddress.ip_address(self.ctx.target.ip).is_loopback:
            problems.append(Problem(
                f"heartbeat: the simulation only sends to loopback, not {self.ctx.target}",
                "use target 127.0.0.1 (or ::1) for the demo, or set heartbeat: false"))
        if not any(p.fatal for p in problems) and not self._mounts:
            if self.root.exists() and not (self.root / MARKER).exists():
                problems.append(Problem(
                    f"{self.root} exists and was not made by scoutfs-sim",
                    "set sysfs_root to a path that does not exist, or remove that path"))
            else:
                problems.append(Problem(f"the demo tree at {self.root} was not built (no prepare)"))
        return problems + self._notes

    def _option_problems(self) -> List[Problem]:
        opts = self.options
        problems = []
        real = os.path.realpath(self.root)
        if (
            not self.root.is_absolute()
            or real == "/"
            or any(real == p or real.startswith(p + "/") for p in REFUSED_PREFIXES)
        ):
            problems.append(
                Problem(
                    f"refusing to build a demo tree at {self.root}",
                    "set sysfs_root to an absolute path under /tmp or /var/tmp",
                )
            )
        if opts.mounts < 1:
            problems.append(Problem("option 'mounts' must be 1 or more", "set mounts: 1"))
        if opts.interval <= 0:
            problems.append(Problem("option 'interval' must be more than 0", "set interval: 0.5"))
        if opts.fence_after < 0:
            problems.append(
                Problem(
                    "option 'fence_after' must be 0 or more",
                    "set fence_after: 0 (never) or a number of seconds",
                )
            )
        known = fixture.default_counter_names()
        for name in opts.counters:
            if name not in known:
                problems.append(
                    Problem(
                        f"counter '{name}' is not a scoutfs counter"
                        f"{did_you_mean(name, known)}: it will be created",
                        fatal=False,
                    )
                )
        return problems

    def start(self) -> None:
        opts = self.options
        fence = f" and published a fence request after {opts.fence_after:g} s" if opts.fence_after > 0 else ""
        (self.ctx.workdir / "README.txt").write_text(
            README.format(root=self.root, mounts=len(self._mounts), interval=opts.interval, fence=fence)
        )
        self._started = time.monotonic()
        self.ctx.set_window(time.time(), None)
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.ctx.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        opts = self.options
        rng = random.Random()
        failed = False
        while True:
            timeout = opts.interval
            if opts.fence_after > 0 and self._fence is None:
                due = self._started + opts.fence_after - time.monotonic()
                timeout = max(0.0, min(timeout, due))
            if self._stop_event.wait(timeout):
                return
            try:
                if opts.heartbeat:
                    self._send_heartbeat()
                if (
                    opts.fence_after > 0
                    and self._fence is None
                    and time.monotonic() >= self._started + opts.fence_after
                ):
                    self._publish_fence(rng)
                for mount in self._mounts:
                    for name in opts.counters:
                        fixture.bump(mount, name, rng.randint(1, 10))
                        self._bumps += 1
            except OSError as exc:  # the tree was removed or unmounted under us
                if not failed:
                    self.log.warning("%s: cannot update %s: %s", self.ctx.name, self.root, exc)
                    failed = True

    def _send_heartbeat(self) -> None:
        target = self.ctx.target
        family = socket.AF_INET6 if target.is_ipv6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto(f"scoutfs-sim heartbeat {self._bumps}".encode(), (target.ip, target.port))

    def _publish_fence(self, rng: random.Random) -> None:
        leader = self._mounts[0]
        victim_rid = f"{rng.getrandbits(64):016x}"
        fixture.add_fence_request(leader, victim_rid, self.options.fence_ipv4, "client_reconnect")
        self._fence = {
            "mount": leader.name,
            "rid": victim_rid,
            "ipv4_addr": self.options.fence_ipv4,
            "reason": "client_reconnect",
            "time": f"{time.time():.3f}",
        }
        self.log.info(
            "%s: published simulated fence request %s on %s", self.ctx.name, victim_rid, leader.name
        )

    def _halt(self) -> None:
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join()

    def _remove_tree(self) -> bool:
        self._halt()  # in case stop() was never called
        if self._mounts and (self.root / MARKER).exists():
            fixture.remove_tree(self.root)
            return not self.root.exists()
        return False

    def cleanup(self) -> None:
        """Remove the simulated tree even when the run ended before finalize."""
        self._remove_tree()

    def stop(self) -> None:
        self._halt()
        first = (self.ctx.window or {}).get("first")
        self.ctx.set_window(first, time.time())

    def finalize(self) -> None:
        removed = self._remove_tree()
        self.ctx.details.update(
            {
                "sysfs_root": str(self.root),
                "mounts": [m.name for m in self._mounts],
                "counter_increases": self._bumps,
                "fence_request": self._fence,
                "tree_removed": removed,
            }
        )


@hookimpl
def scoutfs_collect_register(register):
    register.add_collector(ScoutfsSim)
