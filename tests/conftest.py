"""Shared fixtures: the CLI runner with its own runtime/etc dirs, one real 3-host cluster
run and its bundle, the guard on global tracefs settings, armed triggers and started
collectors that never outlive a test."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator

import pytest

from scoutfs_collect.system import tracefs
from tests.support.cli import Cli
from tests.support.cluster import TriggeredRun, triggered_run
from tests.support.helpers import Fired
from tests.support.tracefs_watch import GONE, OURS, WriteWatch

# The target tier (tests/targets) runs only inside a guest kernel booted by
# tools/test-targets.sh, which sets this variable; elsewhere it is not collected at all.
collect_ignore = [] if os.environ.get("SCOUTFS_COLLECT_TARGET_GUEST") else ["targets"]


@pytest.fixture(scope="session")
def triggered_cluster(tmp_path_factory) -> Iterator[TriggeredRun]:
    """One real run of 3 test hosts in which th2's kmsg trigger stops all three, and its
    bundle: shared by the cluster tests and the bundle analysis tests (one cluster run for
    both keeps the suite short). The hosts are gone by the time a test gets it."""
    with triggered_run(tmp_path_factory.mktemp("cluster3")) as run:
        yield run


@pytest.fixture
def cli(tmp_path: Path):
    c = Cli(tmp_path)
    yield c
    c.cleanup()


# --- system-wide state and plugins run outside the runner --------------------------------

#: Global (top-level) tracefs files the ftrace code must never change.
TRACEFS_GLOBAL_FILES = [
    "tracing_on",
    "current_tracer",
    "trace_clock",
    "buffer_size_kb",
    "set_event",
    "tracing_cpumask",
    "events/enable",
    "events/sched/sched_switch/enable",
    "events/printk/console/enable",
    "events/printk/console/trigger",
    "options/overwrite",
]


def tracefs_global_state() -> Dict[str, str]:
    return {f: (tracefs.DEFAULT_ROOT / f).read_text() for f in TRACEFS_GLOBAL_FILES}


@pytest.fixture
def tracefs_untouched():
    """Fails the test when it wrote a global (top-level) tracefs file (use it with
    ``pytestmark = pytest.mark.usefixtures("tracefs_untouched")``).

    Decided: ours is what this test's process tree writes, whatever the value. fanotify
    reports each write() to TRACEFS_GLOBAL_FILES during the test with the writer's pid
    (tests/support/tracefs_watch.py), sorted at once:
    - this process or a descendant (the CLI runs, trace-cmd): the test fails, even for a
      write of the value already there (our code must not write there at all);
    - another live process (another test run, a tool on the machine): not ours, it fails
      nothing, whatever it changed;
    - a writer that exited before it could be looked at: whose it was cannot be told, so
      that file's content is compared with what it was before the test.
    Without fanotify (not root, an old kernel) every file's content is compared, as it
    was before: a change by another process then fails the test too."""
    before = tracefs_global_state()
    with WriteWatch([tracefs.DEFAULT_ROOT / f for f in TRACEFS_GLOBAL_FILES]) as watch:
        yield
    after = tracefs_global_state()
    if not watch.available:
        assert after == before, f"global tracefs files changed ({watch.why}; whose is unknown)"
        return
    whom = watch.by_whom()
    assert whom[OURS] == [], "this test's processes wrote global tracefs files"
    root = str(tracefs.DEFAULT_ROOT) + "/"
    unknown = {w.path[len(root):] if w.path.startswith(root) else w.path for w in whom[GONE]}
    changed = {f: (before[f], after[f]) for f in unknown if f in before and before[f] != after[f]}
    assert changed == {}, f"global tracefs files changed by a writer that exited: {whom[GONE]}"


@pytest.fixture
def armed():
    """``armed(trigger)`` arms it with a new :class:`tests.helpers.Fired` and returns that.
    Every trigger armed here is disarmed at the end, even when the test fails, and its
    watcher thread (when it has one) must be gone by then."""
    triggers: list = []

    def arm(trigger) -> Fired:
        fired = Fired()
        trigger.arm(fired)
        triggers.append(trigger)
        return fired

    yield arm
    for trigger in triggers:
        trigger.disarm()
    for trigger in triggers:
        thread = getattr(trigger, "_thread", None)
        assert thread is None or not thread.is_alive(), f"{trigger.ctx.name}: watcher still running"


@pytest.fixture
def collectors():
    """Collectors a test started (``collectors.append(c)``) get their ``cleanup()`` at the
    end, as the runner guarantees, whether or not the test stopped them first: no reader or
    sampler thread outlives a test."""
    started: list = []
    yield started
    errors = []
    for collector in started:
        try:
            collector.cleanup()
        except Exception as exc:  # clean up the others all the same, then report it
            errors.append(exc)
    if errors:
        raise errors[0]
