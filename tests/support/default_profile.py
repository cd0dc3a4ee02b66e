"""The built-in ``default`` profile on a machine without scoutfs: every entry kept, pointed
at what exists here (the ``--set`` values below), so a test runs the profile an admin runs.

- ``scoutfs-counters`` and the ``fence-request`` trigger read a simulated scoutfs sysfs tree
  (scoutfs_collect/demo/fixture.py) instead of /sys/fs/scoutfs;
- ``ftrace`` records ``sched:sched_switch`` (no scoutfs:* events here) in an instance of
  the test's own name, with a small ring;
- the ``fencing`` line trigger and the in-kernel freeze match only lines that carry
  ``tag`` too: every namespace test host shares one kernel log, and the fencing line a
  test writes for its server must not also end the other hosts' runs;
- the packet ring is small (the free-space check counts its files).
"""

from __future__ import annotations

from pathlib import Path
from typing import List

FENCING = r"server closing|client .* reconnect timed out, fencing"


def overrides(sysfs: Path, instance: str, tag: str) -> List[str]:
    """The ``--set`` values (``%h`` in ``instance`` or ``tag`` is each node's name in a
    cluster run)."""
    return [f"collectors.scoutfs-counters.sysfs_root={sysfs}",
            f"triggers.fence-request.sysfs_root={sysfs}",
            "collectors.ftrace.events=[sched:sched_switch]",
            "collectors.ftrace.buffer_size_kb=256",
            f"collectors.ftrace.instance={instance}",
            f"collectors.ftrace.freeze_on=['*{tag}*fencing*']",
            f"triggers.fencing.pattern={tag} .*(?:{FENCING})",
            "collectors.tcpdump.file_size_mb=2"]


def set_args(sysfs: Path, instance: str, tag: str) -> List[str]:
    """:func:`overrides` as command-line arguments."""
    return [arg for value in overrides(sysfs, instance, tag) for arg in ("--set", value)]
