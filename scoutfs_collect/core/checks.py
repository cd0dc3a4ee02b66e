"""The runner's own preflight checks: root, the host lock, the output directory, disk space,
the compressor."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence

from scoutfs_collect.archive.compress import compression_problem
from scoutfs_collect.plugin.api import Problem
from scoutfs_collect.system.lock import HostLock
from scoutfs_collect.system.mounts import mount_of, read_mounts

if TYPE_CHECKING:
    from scoutfs_collect.core.instances import PluginInstance
    from scoutfs_collect.core.lifecycle import Invoker
    from scoutfs_collect.core.profile import Settings

MIB = 1024 * 1024


def core_problems(collectors: Sequence[PluginInstance], invoker: Invoker,
                  settings: Settings) -> List[Problem]:
    """What the run itself needs, before any plugin's ``prepare``: root, an output dir with
    room for what the collectors may write (each one's ``disk_estimate``, called through
    ``invoker``), the compressor of ``settings.compression``."""
    problems = check_root()
    estimate = 0
    for inst in collectors:
        outcome = invoker.call(inst.name, "disk_estimate", inst.plugin.disk_estimate, inst.timeout)
        if outcome.ok:
            estimate += int(outcome.value or 0)
    problems += check_output_dir(Path(settings.output_dir), estimate, settings.min_free_mb)
    problem = compression_problem(settings.compression)
    if problem:
        problems.append(Problem(problem))
    return problems


def check_root() -> List[Problem]:
    if os.geteuid() != 0:
        return [Problem("scoutfs-collect must run as root (ftrace, packet capture, /dev/kmsg)",
                        "run it with sudo or as root")]
    return []


def check_lock(lock: HostLock) -> List[Problem]:
    if lock.path.is_symlink():  # never followed (O_NOFOLLOW); say so instead of crashing
        return [Problem(f"the host lock {lock.path} is a symlink: refusing to follow it",
                        f"find out who planted it, then remove it: rm {lock.path}")]
    try:
        holder = lock.probe()
    except OSError as exc:
        return [Problem(f"cannot read the host lock {lock.path}: {exc.strerror}",
                        "check that the runtime directory is writable by root")]
    if holder is None:
        return []
    where = f"; its work dir is {holder.workdir}" if holder.workdir else ""
    return [Problem(f"another scoutfs-collect is already running (pid {holder.pid}){where}",
                    "wait for it, or end it with 'scoutfs-collect stop'")]


def check_output_dir(output_dir: Path, needed_bytes: int, min_free_mb: int,
                     mount_table: Optional[str] = None) -> List[Problem]:
    """The output dir exists, is a writable directory, is not on scoutfs and has room.

    ``mount_table`` (text as in /proc/self/mounts) defaults to the live one."""
    if output_dir.is_symlink() and not output_dir.resolve().is_dir():
        return [Problem(f"output dir {output_dir} is a dangling symlink", "pass --output-dir DIR")]
    if not output_dir.is_dir():
        return [Problem(f"output dir {output_dir} does not exist or is not a directory",
                        f"mkdir -p {output_dir}, or pass --output-dir DIR")]
    problems = []
    if not os.access(output_dir, os.W_OK | os.X_OK):
        problems.append(Problem(f"output dir {output_dir} is not writable",
                                "pass --output-dir DIR on a local writable filesystem"))
    mount = mount_of(output_dir, read_mounts(mount_table))
    mount_point, fstype = mount.point, mount.fstype
    if fstype == "scoutfs":
        problems.append(Problem(
            f"output dir {output_dir} is on the scoutfs filesystem {mount_point}: writing the "
            "capture there would trace itself and feed back",
            "pass --output-dir on a local xfs, ext4 or btrfs filesystem, e.g. /root"))
    st = os.statvfs(output_dir)
    free = st.f_bavail * st.f_frsize
    # The work dir and the archive can coexist at the end: count the data twice.
    wanted = 2 * needed_bytes + min_free_mb * MIB
    if free < wanted:
        problems.append(Problem(
            f"output dir {output_dir} has {free // MIB} MiB free; this profile may need "
            f"{wanted // MIB} MiB (its collectors may write {needed_bytes // MIB} MiB, packed "
            f"beside it, plus settings.min_free_mb={min_free_mb})",
            "free space, pass --output-dir elsewhere, or shrink the rings "
            "(e.g. --set collectors.tcpdump.file_size_mb=10)"))
    return problems


def free_mb(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / MIB


def packing_floor(min_free_mb: int) -> int:
    """Bytes that must stay free while packing: a quarter of the run's floor (at least
    1 MiB). The data may already have pushed free space under min_free_mb (that is what
    the disk-space trigger reacts to), so packing gets the rest but never the last bytes."""
    return max(MIB, min_free_mb * MIB // 4)
