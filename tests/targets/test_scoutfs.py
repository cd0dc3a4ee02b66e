"""scoutfs itself on this kernel, as an admin sets up one node: insmod the module built for
it, mkfs on sparse loop files (metadata 20 GB, data 8 GB), mount with quorum slot 0, find
IP:PORT in the kernel's `server starting at` line, run the default profile against it and end
it with the real fencing line: the archive holds real scoutfs:* events and counters.

One node has no quorum heartbeat on the wire (scoutfs sends heartbeats only to the *other*
quorum slots), so the run sets collectors.tcpdump.heartbeat_timeout=0, the fix the preflight
itself prints for that case."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

import pytest

from tests.support.cli import Cli, finish
from tests.support.helpers import archive_of, extract, kmsg_write, wait_for
from tests.targets.conftest import RESULTS, SCOUTFS_DIR
from tests.targets.scoutfs_cluster import free_port, server_starting, sh

PROBE = "scoutfs_fence_start"


@dataclass
class Node:
    ip: str
    port: int
    fs_id: str  # f.XXXXXX.r.YYYYYY, as the kernel prefixes its lines
    mnt: Path


def enabled_probe(root: Path) -> List[str]:
    """The top-level enabled_functions lines of our probe's function (read only)."""
    return [ln for ln in (root / "enabled_functions").read_text().splitlines() if ln.startswith(PROBE)]


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[Node]:
    """A mounted one-node scoutfs; unmounted, detached and unloaded at the end."""
    tool, base = Path(SCOUTFS_DIR) / "scoutfs", tmp_path_factory.mktemp("scoutfs")
    undo: List[List[object]] = []
    try:
        sh("insmod", Path(SCOUTFS_DIR) / "scoutfs.ko")
        undo.append(["rmmod", "scoutfs"])
        disks = base / "disks"
        disks.mkdir()
        sh("mount", "-t", "tmpfs", "-o", "size=1500m", "tmpfs", disks)  # sparse, in guest RAM
        undo.append(["umount", disks])
        loops = []
        for name, size in (("meta", "20G"), ("data", "8G")):
            sh("truncate", "-s", size, disks / f"{name}.img")
            loops.append(sh("losetup", "-f", "--show", disks / f"{name}.img"))
            undo.append(["losetup", "-d", loops[-1]])
        meta, data = loops
        sh(tool, "mkfs", "-A", "-Q", f"0,127.0.0.1,{free_port()}", meta, data)
        mnt = base / "mnt"
        mnt.mkdir()
        before = len(server_starting())
        sh("mount", "-t", "scoutfs", "-o", f"metadev_path={meta},quorum_slot_nr=0", data, mnt)
        undo.append(["umount", mnt])
        line = wait_for(lambda: server_starting()[before:], 120, "scoutfs: server starting at")[0]
        yield Node(line.group(2), int(line.group(3)), line.group(1), mnt)
    finally:
        for argv in reversed(undo):
            subprocess.run([str(a) for a in argv], capture_output=True, timeout=300)


def write_files(mnt: Path, tag: str, count: int = 5) -> None:
    for i in range(count):
        (mnt / f"{tag}-{i}").write_bytes(b"x" * 65536)
    sh("sync", "-f", mnt)


def test_default_profile_records_scoutfs_events_and_counters(node, tmp_path, printk_levels,
                                                             top_tracing_on, tracing_root, observe):
    printk_levels("4 4 1 7")  # RHEL's console level with `quiet`
    cli = Cli(tmp_path)
    # The default profile's rings want ~1.1 GB free; the guest's /tmp is RAM: the archive goes
    # to the host's results dir (kept for a look afterwards).
    out = Path(RESULTS) / "scoutfs-archive" if RESULTS else cli.out
    out.mkdir(exist_ok=True)
    try:
        proc = cli.start("--profile", "default", "--output-dir", str(out), "--events-file",
                         str(cli.events), "--set", "collectors.tcpdump.heartbeat_timeout=0",
                         # software emulation is ~50x slower: the trace text and trace.dat of
                         # a real scoutfs ring take longer than the 30 s default phase limit
                         "--set", "settings.phase_timeout=600",
                         node.ip, str(node.port))
        cli.wait_event("armed", proc, timeout=300)
        armed = enabled_probe(tracing_root)
        write_files(node.mnt, "before")
        fencing = f"scoutfs {node.fs_id}: client 127.0.0.1:{node.port + 1} reconnect timed out, fencing"
        kmsg_write(fencing)
        write_files(node.mnt, "after")  # the module traces on: a frozen ring keeps none of it
        code, out, err = finish(proc, timeout=600)
    finally:
        cli.cleanup()
    after = enabled_probe(tracing_root)
    assert code == 0, err
    top = extract(archive_of(out), tmp_path / "x")
    m = json.loads((top / "manifest.json").read_text())
    assert m["trigger"]["name"] == "fencing", m["trigger"]
    statuses = {name: p["status"] for name, p in m["plugins"].items()}
    ft = m["plugins"]["ftrace"]["details"]
    lines = [ln for ln in (top / "ftrace" / "trace.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    scoutfs_events = [ln for ln in lines if re.search(r" scoutfs_\w+:", ln)]
    hits = [i for i, ln in enumerate(lines) if " console: " in ln and "reconnect timed out, fencing" in ln]
    past = [ln for ln in lines[hits[-1] + 1:] if re.search(r" scoutfs_\w+:", ln)] if hits else None
    observe("freeze_mode", ft.get("freeze_mode"))
    observe("events_enabled", len(ft.get("events_enabled", [])))
    observe("scoutfs_events_recorded", len(scoutfs_events))
    observe("scoutfs_events_past_fencing", None if past is None else len(past))
    observe("plugin_status", statuses)
    assert all(s == "ok" for s in statuses.values()), m["plugins"]
    assert ft["events_enabled"] == ["scoutfs:*"], ft["events_enabled"]
    assert len({re.search(r" (scoutfs_\w+):", ln).group(1) for ln in scoutfs_events}) >= 5, lines[-5:]
    counters = top / "scoutfs-counters"
    delta = (counters / "counters-delta.txt").read_text()
    assert re.search(r"\b[1-9]\d* of \d+ counters changed", delta), delta[:2000]
    assert node.fs_id in (counters / "mounts.txt").read_text()
    if ft["freeze_mode"] == "in-kernel":
        assert past == [], past[:5]
    # With the module loaded the function probe on scoutfs_fence_start is armed (listed in the
    # top-level enabled_functions while the run records) and gone after it. The line of this
    # test calls no scoutfs function: the run stops from user space (test_fence.py has the
    # real fence).
    assert ft["freeze_mode"] == "function-probe", ft["freeze_why"]
    assert ft["freeze_probes"] == [PROBE] and ft["frozen_by"] == "stop", ft
    assert [ln.split()[:2] for ln in armed] == [[PROBE, "[scoutfs]"]], armed
    assert after == [], after
    assert top_tracing_on.read_text().strip() == "1"
