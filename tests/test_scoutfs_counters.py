"""scoutfs-counters and scoutfs-sim against a fixture sysfs tree (the scoutfs module
cannot be loaded here; the fixture directory is the one allowed stand-in)."""

from __future__ import annotations

import csv
import json
import os
import re
import threading
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from scoutfs_collect.builtin_plugins.collectors import scoutfs_counters
from scoutfs_collect.builtin_plugins.collectors.scoutfs_counters import ScoutfsCounters
from scoutfs_collect.builtin_plugins.collectors.scoutfs_sim import DEFAULT_COUNTERS, ScoutfsSim
from scoutfs_collect.builtin_plugins.triggers.scoutfs_fence import ScoutfsFence
from scoutfs_collect.demo import fixture
from scoutfs_collect.scoutfs import sysfs
from tests.support.helpers import counter_names, make_plugin, wait_for

PROFILES = Path(__file__).resolve().parents[1] / "profiles"


def make(cls, tmp_path: Path, name: str, **values):
    return make_plugin(cls, tmp_path / "work" / name, name=name, **values)


@pytest.fixture
def root(tmp_path):
    return tmp_path / "sysfs"


def start(c, collectors):
    assert c.preflight() == []
    c.start()
    collectors.append(c)
    return c


def wait_samples(c, more: int = 2):
    """Wait until `more` complete samples were taken after this call."""
    target = c.samples + more
    wait_for(lambda: c.samples >= target, what=f"{target} samples")


def series(workdir: Path) -> List[Dict[str, str]]:
    with open(workdir / "counters-series.csv", newline="") as f:
        return list(csv.DictReader(f))


def delta_rows(text: str, mount: str) -> Dict[str, Tuple[int, int, int]]:
    """counter -> (start, stop, change) from the table of one mount in counters-delta.txt."""
    block = text.split(mount, 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in block.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3][0] in "+-" and parts[1].lstrip("-").isdigit():
            rows[parts[0]] = (int(parts[1]), int(parts[2]), int(parts[3]))
    return rows


def test_packaged_counter_names_are_what_the_profiles_and_fixture_rely_on():
    names = fixture.default_counter_names()
    assert len(names) == 203 and len(set(names)) == 203
    assert all(re.fullmatch(r"[a-z0-9_]+", n) for n in names)
    # every counter a built-in profile or the demo names is one a real module has
    for path in sorted(PROFILES.glob("*.yaml")):
        for name in re.findall(r"counter:\s*([a-z0-9_]+)", path.read_text()):
            assert name in names, (path.name, name)
    assert set(DEFAULT_COUNTERS) <= set(names)


def test_the_suite_reads_nothing_outside_the_repository():
    """A user's clone has no reference folder beside it: no test, helper or tool may look there."""
    repo = Path(__file__).resolve().parents[1]
    offenders = []
    for path in [*repo.glob("tests/**/*.py"), *repo.glob("tools/**/*"), *repo.glob("bench/*.py")]:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if re.search(r"\.\./shared|parents\[2\]|[\"']shared[\"']", text) and path != Path(__file__).resolve():
            offenders.append(str(path.relative_to(repo)))
    assert offenders == []


def test_fixture_layout(root):
    mounts = fixture.build(root, mounts=2, counter_names=counter_names())
    assert sysfs.list_mounts(root) == sorted(m.name for m in mounts)
    m = mounts[0]
    rid = (m / "rid").read_text().strip()
    assert len(rid) == 16 and m.name.endswith(rid[:6])
    assert (m / "quorum" / "is_leader").read_text() == "1"
    assert fixture.bump(m, "btree_split", 7) == 7
    assert (m / "counters" / "btree_split").read_text() == "7\n"
    req = fixture.add_fence_request(m, "0123456789abcdef", "10.0.0.2", "client_reconnect")
    assert (req / "reason").read_text() == "client_reconnect"
    state = sysfs.read_mount(root, m.name)
    assert len(state.counters.values) == 203 and state.error is None
    assert state.fence["0123456789abcdef"].ipv4_addr == "10.0.0.2"
    fixture.remove_mount(m)
    assert sysfs.list_mounts(root) == [mounts[1].name]


def test_preflight_missing_root(tmp_path):
    c = make(ScoutfsCounters, tmp_path, "c", sysfs_root=str(tmp_path / "nope"))
    (problem,) = c.preflight()
    assert problem.fatal and "scoutfs kernel module not loaded" in problem.message
    assert "modprobe scoutfs" in problem.fix


def test_preflight_no_mounts(tmp_path, root):
    root.mkdir()
    (root / "not-a-mount").mkdir()
    c = make(ScoutfsCounters, tmp_path, "c", sysfs_root=str(root))
    (problem,) = c.preflight()
    assert problem.fatal and "no scoutfs filesystem mounted" in problem.message


def test_delta_series_and_snapshots_exact(tmp_path, root, collectors):
    m0, m1 = fixture.build(root, mounts=2, counter_names=counter_names())
    fixture.bump(m0, "lock_lock", 100)  # moved before start: not in the delta
    c = start(make(ScoutfsCounters, tmp_path, "c", sysfs_root=str(root), interval=0.05), collectors)
    fixture.bump(m0, "lock_lock", 5)
    fixture.bump(m1, "net_send_bytes", 4096)
    wait_samples(c)
    fixture.bump(m0, "lock_lock", 3)
    fixture.bump(m0, "btree_split", 1)
    wait_samples(c)
    fixture.bump(m1, "net_send_bytes", 1)  # only the stop snapshot sees this one
    c.stop()
    c.finalize()
    work = c.ctx.workdir

    text = (work / "counters-delta.txt").read_text()
    assert delta_rows(text, m0.name) == {"lock_lock": (100, 108, 8), "btree_split": (0, 1, 1)}
    assert delta_rows(text, m1.name) == {"net_send_bytes": (0, 4097, 4097)}
    assert "2 of 203 counters changed" in text and "1 of 203 counters changed" in text

    begin = json.loads((work / "counters-start.json").read_text())
    end = json.loads((work / "counters-stop.json").read_text())
    assert begin["mounts"][m0.name]["counters"]["lock_lock"] == 100
    assert end["mounts"][m0.name]["counters"]["lock_lock"] == 108
    assert end["mounts"][m0.name]["quorum"]["is_leader"] == "1"
    assert end["mounts"][m1.name]["mount_options"]["quorum_slot_nr"] == "1"
    assert end["mounts"][m0.name]["rid"] == (m0 / "rid").read_text().strip()

    rows = series(work)
    for mount, counter, total in ((m0, "lock_lock", 8), (m1, "net_send_bytes", 4097)):
        mine = [r for r in rows if r["mount"] == mount.name and r["counter"] == counter]
        assert sum(int(r["change"]) for r in mine) == total
        assert mine[-1]["value"] == str(end["mounts"][mount.name]["counters"][counter])
    assert {r["counter"] for r in rows} == {"lock_lock", "btree_split", "net_send_bytes"}
    assert [float(r["elapsed_s"]) for r in rows] == sorted(float(r["elapsed_s"]) for r in rows)

    d = c.ctx.details
    assert d["mounts_seen"] == sorted([m0.name, m1.name]) and d["counter_count"] == 203
    assert d["samples"] >= 5 and d["read_problems"] == [] and d["mounts_vanished"] == []
    assert d["stop_read_seconds"] > 0  # recorded; how fast it is, is bench/trigger_latency.py's
    assert c.ctx.window["first"] < c.ctx.window["last"] and c.ctx.failures == []
    mounts_txt = (work / "mounts.txt").read_text()
    assert m0.name in mounts_txt and "quorum leader: 1" in mounts_txt


def test_stop_files_hold_the_values_at_stop_not_at_finalize(tmp_path, root, collectors):
    """stop() is the trigger instant: it reads the counters and leaves the writing to
    finalize. What moves between the two (a fencing node keeps counting) is not in the
    stop files, the delta or the series."""
    (m0,) = fixture.build(root, counter_names=counter_names())
    c = start(make(ScoutfsCounters, tmp_path, "c", sysfs_root=str(root), interval=0.02), collectors)
    fixture.bump(m0, "lock_lock", 7)
    c.stop()
    fixture.bump(m0, "lock_lock", 1000)  # after the trigger
    fixture.bump(m0, "btree_split", 5)
    c.finalize()
    work = c.ctx.workdir
    end = json.loads((work / "counters-stop.json").read_text())
    assert end["mounts"][m0.name]["counters"]["lock_lock"] == 7
    assert end["mounts"][m0.name]["counters"]["btree_split"] == 0
    assert delta_rows((work / "counters-delta.txt").read_text(), m0.name) == {
        "lock_lock": (0, 7, 7)}
    rows = series(work)
    assert [(r["counter"], r["value"]) for r in rows] == [("lock_lock", "7")]
    assert c.ctx.window["last"] == pytest.approx(end["time"], abs=1e-5)


def test_vanishing_mount_nonnumeric_and_changing_counter_set(tmp_path, root, collectors):
    m0, m1 = fixture.build(root, mounts=2, counter_names=counter_names())
    c = start(make(ScoutfsCounters, tmp_path, "c", sysfs_root=str(root), interval=0.05), collectors)
    fixture.set_counter(m0, "btree_split", "garbage\n")
    fixture.remove_counter(m0, "btree_join")
    fixture.bump(m0, "brand_new_counter", 3)
    fixture.bump(m1, "lock_lock", 2)
    wait_samples(c)
    fixture.remove_mount(m1)
    wait_samples(c)
    (m2,) = fixture.build(root, mounts=1, counter_names=["lock_lock", "net_send_bytes"])
    fixture.bump(m2, "net_send_bytes", 9)
    wait_samples(c)
    c.stop()
    c.finalize()
    d = c.ctx.details
    assert c.ctx.failures == []
    assert [e["mount"] for e in d["mounts_vanished"]] == [m1.name]
    assert [e["mount"] for e in d["mounts_appeared"]] == [m2.name]
    problems = {(p["mount"], p["counter"]): p["problem"] for p in d["read_problems"]}
    assert problems[(m0.name, "btree_split")] == "not a number: 'garbage'"
    assert (m0.name, "btree_join") in problems
    text = (c.ctx.workdir / "counters-delta.txt").read_text()
    assert "unreadable at stop: btree_split: not a number: 'garbage'" in text
    assert "appeared during the run: brand_new_counter=3" in text
    assert "vanished during the run: btree_join" in text
    assert "vanished during the run (unmounted?)" in text.split(m1.name, 1)[1]
    assert delta_rows(text, m2.name) == {"net_send_bytes": (0, 9, 9)}
    stop = json.loads((c.ctx.workdir / "counters-stop.json").read_text())
    assert set(stop["mounts"]) == {m0.name, m2.name}
    assert f"vanished during the run: {m1.name}" in (c.ctx.workdir / "mounts.txt").read_text()


def test_interval_zero_samples_only_at_stop(tmp_path, root, collectors):
    (m0,) = fixture.build(root, counter_names=counter_names())
    c = start(make(ScoutfsCounters, tmp_path, "c", sysfs_root=str(root), interval=0), collectors)
    assert c._thread is None
    fixture.bump(m0, "item_lookup", 11)
    c.stop()
    c.finalize()
    rows = series(c.ctx.workdir)
    assert [(r["counter"], r["value"], r["change"]) for r in rows] == [("item_lookup", "11", "11")]
    assert c.ctx.details["samples"] == 1


def test_series_is_capped_keeping_newest(tmp_path, root, collectors, monkeypatch):
    monkeypatch.setattr(scoutfs_counters, "MB", 2000)  # cap: 2000 bytes, halves of 1000
    (m0,) = fixture.build(root, counter_names=counter_names())
    c = start(
        make(ScoutfsCounters, tmp_path, "c", sysfs_root=str(root), interval=0.02, max_series_mb=1), collectors
    )
    for _ in range(40):  # one row (~60 bytes) per sample
        fixture.bump(m0, "lock_lock", 1)
        wait_samples(c, 1)
    assert c._rotated_at is not None
    fixture.bump(m0, "lock_lock", 1)
    c.stop()
    c.finalize()
    work = c.ctx.workdir
    assert not (work / scoutfs_counters.SERIES_OLD).exists()
    lines = (work / "counters-series.csv").read_text().splitlines()
    assert lines[0] == "utc,elapsed_s,mount,counter,value,change" and lines.count(lines[0]) == 1
    assert len("\n".join(lines)) <= 2000 + 200
    values = [int(r["value"]) for r in series(work)]
    assert values[-1] == 41 and values == sorted(values) and values[0] > 1
    assert c.ctx.details["series_dropped_before"] is not None


# ---------------------------------------------------------------- scoutfs-sim demo


def test_sim_preflight_changes_nothing_and_cleanup_removes_what_prepare_built(tmp_path, root):
    sim = make(ScoutfsSim, tmp_path, "sim", dry_run=True, sysfs_root=str(root))
    assert [p.fatal for p in sim.preflight()] == [True]  # not prepared: reported, not built
    assert not root.exists()
    sim.prepare()
    assert (root / ".scoutfs-sim").exists() and list(root.glob("f.*.r.*"))
    notes = sim.preflight()
    assert [p.fatal for p in notes] == [False] and "built demo" in notes[0].message
    sim.cleanup()
    assert not root.exists()


def test_sim_refuses_foreign_and_system_paths(tmp_path, root):
    root.mkdir()
    (root / "precious").write_text("x")
    sim = make(ScoutfsSim, tmp_path, "sim", sysfs_root=str(root))
    sim.prepare()
    assert any(p.fatal and "not made by scoutfs-sim" in p.message for p in sim.preflight())
    assert (root / "precious").exists()
    sim.cleanup()
    assert (root / "precious").exists()
    sys_sim = make(ScoutfsSim, tmp_path, "sim2", sysfs_root="/sys/fs/scoutfs")
    sys_sim.prepare()
    assert any(p.fatal and "refusing" in p.message for p in sys_sim.preflight())


def test_sim_demo_moves_counters_and_fires_fence(tmp_path, root, collectors):
    sim = make(ScoutfsSim, tmp_path, "sim", sysfs_root=str(root), interval=0.05, fence_after=0.3, mounts=2)
    sim.prepare()
    notes = sim.preflight()
    assert [p.fatal for p in notes] == [False] and "built demo" in notes[0].message
    counters = start(
        make(ScoutfsCounters, tmp_path, "counters", sysfs_root=str(root), interval=0.05), collectors
    )
    fence = make(ScoutfsFence, tmp_path, "fence", sysfs_root=str(root), interval=0.05)
    assert fence.preflight() == []
    fired: List[str] = []
    fence.arm(fired.append)
    try:
        sim.start()
        wait_for(lambda: fired, what="fence trigger")
    finally:
        fence.disarm()
        sim.stop()
    counters.stop()
    counters.finalize()
    sim.finalize()
    leader = sim.ctx.details["mounts"][0]
    assert fired == [
        f"fence request for rid {sim.ctx.details['fence_request']['rid']} "
        f"(ipv4 127.0.0.2, reason client_reconnect) on {leader}"
    ]
    assert not root.exists() and sim.ctx.details["tree_removed"]
    assert [p.name for p in sim.ctx.workdir.iterdir()] == ["README.txt"]
    assert "SIMULATION" in (sim.ctx.workdir / "README.txt").read_text()
    text = (counters.ctx.workdir / "counters-delta.txt").read_text()
    assert delta_rows(text, leader)["net_send_messages"][2] > 0


def test_cleanup_before_stop_ends_sampler_and_closes_series(tmp_path, root):
    """A run that ends before stop() (another plugin failed to start) gives everything back."""
    fixture.build(root, counter_names=["lock_lock"])
    c = make(ScoutfsCounters, tmp_path, "c", sysfs_root=str(root), interval=0.02)
    assert c.preflight() == []
    c.start()
    wait_samples(c, 1)
    c.cleanup()
    assert not c._thread.is_alive() and c._series.closed
    c.cleanup()  # twice: idempotent


def test_stop_does_not_wait_for_the_server(tmp_path, root, collectors):
    """Reading a volume_options file asks the scoutfs server (kmod/src/volopt.c); on the
    node being fenced the server does not answer and the read blocks (seen in a guest
    with the real module: the stop phase hung to the phase timeout). Here such a file is
    a FIFO with no writer, which blocks its reader as that file does: stop() still
    returns, with the counters at the trigger."""
    (m0,) = fixture.build(root, counter_names=counter_names())
    c = start(make(ScoutfsCounters, tmp_path, "c", sysfs_root=str(root), interval=0), collectors)
    opts = root / m0.name / "volume_options"
    blocking = opts / sorted(p.name for p in opts.iterdir())[0]
    blocking.unlink()
    os.mkfifo(blocking)
    fixture.bump(m0, "lock_lock", 3)
    done = threading.Event()
    stopper = threading.Thread(target=lambda: (c.stop(), done.set()), daemon=True)
    stopper.start()
    try:
        wait_for(done.is_set, 30, "stop() returning")
    finally:
        if not done.is_set():  # release the blocked reader so the test can end
            with open(blocking, "w"):
                pass
        stopper.join(10)
    c.finalize()
    end = json.loads((c.ctx.workdir / "counters-stop.json").read_text())
    assert end["mounts"][m0.name]["counters"]["lock_lock"] == 3
