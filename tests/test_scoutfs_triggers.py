"""scoutfs-fence and counter triggers against a fixture sysfs tree (the scoutfs module
cannot be loaded here; the fixture directory is the one allowed stand-in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoutfs_collect.builtin_plugins.triggers.counter import CounterTrigger
from scoutfs_collect.builtin_plugins.triggers.scoutfs_fence import ScoutfsFence
from scoutfs_collect.demo import fixture
from tests.support.helpers import counter_names, make_plugin, wait_for

RID_OLD = "00000000000000aa"
RID_NEW = "0123456789abcdef"


@pytest.fixture
def root(tmp_path):
    return tmp_path / "sysfs"


def make(cls, tmp_path: Path, name: str, **values):
    return make_plugin(cls, tmp_path / "work" / name, name=name, **values)


# ---------------------------------------------------------------- scoutfs-fence


def test_fence_preflight(tmp_path, root):
    missing = make(ScoutfsFence, tmp_path, "a", sysfs_root=str(tmp_path / "nope"))
    (problem,) = missing.preflight()
    assert problem.fatal and "scoutfs kernel module not loaded" in problem.message
    root.mkdir()
    empty = make(ScoutfsFence, tmp_path, "b", sysfs_root=str(root))
    (note,) = empty.preflight()
    assert not note.fatal and "no scoutfs filesystem mounted" in note.message
    fixture.build(root, counter_names=["lock_lock"])
    assert make(ScoutfsFence, tmp_path, "c", sysfs_root=str(root)).preflight() == []


def test_fence_new_request_fires_preexisting_does_not(tmp_path, root, armed):
    m0, m1 = fixture.build(root, mounts=2, counter_names=["lock_lock"])
    fixture.add_fence_request(m0, RID_OLD, "10.0.0.9", "client_recovery")
    trigger = make(ScoutfsFence, tmp_path, "fence", sysfs_root=str(root), interval=0.05)
    fired = armed(trigger)
    assert [r["rid"] for r in trigger.ctx.details["requests_at_arm"]] == [RID_OLD]
    wait_for(lambda: trigger.scans >= 2, what="two scans")
    assert not fired.event.is_set()  # the request present at arm time does not fire
    fixture.add_fence_request(m1, RID_NEW, "10.0.0.2", "client_reconnect")
    wait_for(fired.event.is_set, what="fence trigger")
    trigger.disarm()
    assert fired.reasons == [
        f"fence request for rid {RID_NEW} (ipv4 10.0.0.2, reason client_reconnect) on {m1.name}"
    ]
    assert trigger.ctx.details["fired_by"]["reason"] == "client_reconnect"
    assert trigger.ctx.details["mounts_watched"] == sorted([m0.name, m1.name])


def test_fence_watches_mounts_that_appear_later(tmp_path, root, armed):
    root.mkdir()
    trigger = make(ScoutfsFence, tmp_path, "fence", sysfs_root=str(root), interval=0.05)
    fired = armed(trigger)
    (m0,) = fixture.build(root, counter_names=["lock_lock"])
    fixture.add_fence_request(m0, RID_NEW, "10.0.0.3", "quorum_block_leader")
    wait_for(fired.event.is_set, what="fence trigger")
    assert fired.reasons == [
        f"fence request for rid {RID_NEW} (ipv4 10.0.0.3, reason quorum_block_leader) on {m0.name}"
    ]


def test_fence_request_served_then_requested_again_fires(tmp_path, root, armed):
    (m0,) = fixture.build(root, counter_names=["lock_lock"])
    fixture.add_fence_request(m0, RID_OLD, "10.0.0.9", "client_recovery")
    trigger = make(ScoutfsFence, tmp_path, "fence", sysfs_root=str(root), interval=0.02)
    fired = armed(trigger)
    fixture.remove_fence_request(m0, RID_OLD)
    target = trigger.scans + 2  # one full scan after the removal, at least
    wait_for(lambda: trigger.scans >= target, what="two scans")
    assert not fired.event.is_set()
    fixture.add_fence_request(m0, RID_OLD, "10.0.0.9", "client_recovery")
    wait_for(fired.event.is_set, what="fence trigger")
    assert fired.reasons == [
        f"fence request for rid {RID_OLD} (ipv4 10.0.0.9, reason client_recovery) on {m0.name}"
    ]


# ---------------------------------------------------------------- counter


def test_counter_preflight(tmp_path, root):
    empty = make(CounterTrigger, tmp_path, "a", sysfs_root=str(tmp_path / "nope"))
    messages = [p.message for p in empty.preflight()]
    assert any("option 'counter' is empty" in m for m in messages)
    assert any("scoutfs kernel module not loaded" in m for m in messages)
    root.mkdir()
    none = make(CounterTrigger, tmp_path, "b", sysfs_root=str(root), counter="lock_lock")
    (problem,) = none.preflight()
    assert problem.fatal and "no scoutfs filesystem mounted" in problem.message
    fixture.build(root, counter_names=counter_names())
    typo = make(CounterTrigger, tmp_path, "c", sysfs_root=str(root), counter="block_cache_alloc_failur")
    (problem,) = typo.preflight()
    assert problem.fatal and "(did you mean 'block_cache_alloc_failure'?)" in problem.message
    bad = make(
        CounterTrigger, tmp_path, "d", sysfs_root=str(root), counter="lock_lock", threshold=0, window=0
    )
    assert len([p for p in bad.preflight() if p.fatal]) == 2
    good = make(CounterTrigger, tmp_path, "e", sysfs_root=str(root), counter="block_cache_alloc_failure")
    assert good.preflight() == []


@pytest.fixture
def arm_counter(tmp_path, root, armed):
    """arm_counter(**options) -> (trigger, Fired): a counter trigger on the fixture tree,
    sampling every 20 ms, armed through the shared ``armed`` fixture."""

    def arm(**values):
        trigger = make(CounterTrigger, tmp_path, "t", sysfs_root=str(root), interval=0.02, **values)
        return trigger, armed(trigger)

    return arm


def wait_samples(trigger, more: int = 2):
    target = trigger.samples + more
    wait_for(lambda: trigger.samples >= target, what=f"{target} counter samples")


def test_counter_fires_at_threshold_not_below(root, arm_counter):
    m0, m1 = fixture.build(root, mounts=2, counter_names=counter_names())
    fixture.bump(m0, "block_cache_alloc_failure", 50)  # before arm: does not count
    trigger, fired = arm_counter(counter="block_cache_alloc_failure", threshold=5, window=30)
    fixture.bump(m0, "block_cache_alloc_failure", 3)
    fixture.bump(m1, "block_cache_alloc_failure", 4)  # 7 in sum, but per mount < 5
    wait_samples(trigger)
    assert not fired.event.is_set()
    fixture.bump(m0, "block_cache_alloc_failure", 2)
    wait_for(fired.event.is_set, what="counter trigger")
    assert fired.reasons == [
        f"counter block_cache_alloc_failure rose by 5 (threshold 5) within 30 s on {m0.name}"
    ]
    assert trigger.ctx.details["baseline"][m0.name] == 50


def test_counter_window_expires_old_increases(root, arm_counter):
    (m0,) = fixture.build(root, counter_names=counter_names())
    trigger, fired = arm_counter(counter="lock_lock", threshold=2, window=0.3)
    fixture.bump(m0, "lock_lock", 1)
    wait_samples(trigger, 20)  # 20 x 20 ms >= 0.4 s: that increase is out of the window now
    fixture.bump(m0, "lock_lock", 1)
    wait_samples(trigger, 3)
    assert not fired.event.is_set()
    fixture.bump(m0, "lock_lock", 1)
    wait_for(fired.event.is_set, what="counter trigger")
    assert "rose by 2 (threshold 2) within 0.3 s" in fired.reasons[0]


def test_counter_sum_over_mounts(root, arm_counter):
    m0, m1 = fixture.build(root, mounts=2, counter_names=counter_names())
    trigger, fired = arm_counter(counter="lock_lock", threshold=6, window=30, per_mount=False)
    fixture.bump(m0, "lock_lock", 3)
    wait_samples(trigger)
    assert not fired.event.is_set()
    fixture.bump(m1, "lock_lock", 3)
    wait_for(fired.event.is_set, what="counter trigger")
    mounts = ", ".join(sorted([m0.name, m1.name]))
    assert fired.reasons == [
        f"counter lock_lock rose by 6 (threshold 6) within 30 s on all mounts ({mounts})"
    ]


def test_counter_survives_bad_value_reset_and_unmount(root, arm_counter):
    m0, m1 = fixture.build(root, mounts=2, counter_names=counter_names())
    fixture.bump(m0, "lock_lock", 100)
    trigger, fired = arm_counter(counter="lock_lock", threshold=10, window=30)
    fixture.set_counter(m0, "lock_lock", "n/a\n")
    wait_samples(trigger)
    fixture.set_counter(m0, "lock_lock", "5\n")  # went down: history starts again
    wait_samples(trigger)
    fixture.bump(m0, "lock_lock", 9)  # 14: only +9 since the reset
    fixture.remove_mount(m1)
    wait_samples(trigger)
    assert not fired.event.is_set() and trigger.ctx.failures == []
    assert any("not a number: 'n/a'" in p for p in trigger.ctx.details["read_problems"])
    fixture.bump(m0, "lock_lock", 1)
    wait_for(fired.event.is_set, what="counter trigger")
    assert fired.reasons == [f"counter lock_lock rose by 10 (threshold 10) within 30 s on {m0.name}"]
