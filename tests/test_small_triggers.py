"""The timer, file and journal triggers."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import List

import pytest

from scoutfs_collect import PluginContext, Target
from scoutfs_collect.options import OptionError, build
from scoutfs_collect.plugins import journal as journal_plugin
from scoutfs_collect.plugins.file import FileTrigger
from scoutfs_collect.plugins.journal import JournalTrigger
from scoutfs_collect.plugins.timer import TimerTrigger
from scoutfs_collect.registry import load


class Fired:
    def __init__(self) -> None:
        self.reasons: List[str] = []
        self.at: List[float] = []
        self.event = threading.Event()

    def __call__(self, reason: str) -> None:
        self.at.append(time.monotonic())
        self.reasons.append(reason)
        self.event.set()


def make(cls, tmp_path: Path, **values):
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    ctx = PluginContext(name=cls.type_name, type_name=cls.type_name,
                        target=Target("127.0.0.1", 5000), workdir=workdir)
    return cls(ctx, build(cls.Options, values))


@pytest.fixture
def armed():
    """arm(trigger) -> Fired; every trigger armed here is disarmed at the end."""
    triggers = []

    def arm(trigger):
        fired = Fired()
        trigger.arm(fired)
        triggers.append(trigger)
        return fired

    yield arm
    for trigger in triggers:
        trigger.disarm()


def test_registered_through_entry_points():
    registry = load()
    for name in ("timer", "file", "journal", "kmsg"):
        assert registry.get(name, "trigger").type_name == name


# --- timer -------------------------------------------------------------------------------

def test_timer_fires_after_the_delay_not_before(tmp_path, armed):
    trigger = make(TimerTrigger, tmp_path, after=0.3)
    assert trigger.preflight() == []
    t0 = time.monotonic()
    fired = armed(trigger)
    assert fired.event.wait(2)
    assert fired.at[0] - t0 >= 0.3
    assert fired.at[0] - t0 < 0.8
    assert fired.reasons == ["timer: 0.3 s elapsed"]


def test_timer_disarm_before_firing_is_quick_and_silent(tmp_path):
    trigger = make(TimerTrigger, tmp_path, after=60)
    fired = Fired()
    trigger.arm(fired)
    t0 = time.monotonic()
    trigger.disarm()
    assert time.monotonic() - t0 < 0.5
    assert fired.reasons == []


def test_timer_options(tmp_path):
    assert make(TimerTrigger, tmp_path).options.after == 10.0
    assert make(TimerTrigger, tmp_path, after=-1).preflight()[0].message.startswith("option 'after'")
    with pytest.raises(OptionError):
        build(TimerTrigger.Options, {"after": "soon"})


# --- file --------------------------------------------------------------------------------

def test_file_trigger_fires_when_the_file_is_created(tmp_path, armed):
    path = tmp_path / "dump-now"
    trigger = make(FileTrigger, tmp_path, path=str(path))
    assert trigger.preflight() == []
    fired = armed(trigger)
    assert not fired.event.wait(0.05)  # nothing there yet
    t0 = time.monotonic()
    path.write_text("node3 hung in fencing\nmore\n")
    assert fired.event.wait(2)
    assert fired.at[0] - t0 < 0.2  # inotify: no 0.5 s polling interval
    assert fired.reasons[0].startswith(f"file {path} appeared")
    assert trigger.ctx.details["method"] == "inotify"


def test_file_trigger_sees_a_rename_and_passes_the_note(tmp_path, armed):
    path = tmp_path / "dump-now"
    fired = armed(make(FileTrigger, tmp_path, path=str(path)))
    tmp = tmp_path / "dump-now.tmp"
    tmp.write_text("operator asked\n")
    os.rename(tmp, path)
    assert fired.event.wait(2)
    assert fired.reasons == [f"file {path} appeared: operator asked"]


def test_file_trigger_preflight(tmp_path):
    assert "empty" in make(FileTrigger, tmp_path).preflight()[0].message
    existing = tmp_path / "already"
    existing.write_text("")
    (problem,) = make(FileTrigger, tmp_path, path=str(existing)).preflight()
    assert "already exists" in problem.message and problem.fix == f"remove it first: rm {existing}"
    (problem,) = make(FileTrigger, tmp_path, path=str(tmp_path / "no" / "x")).preflight()
    assert "does not exist" in problem.message


# --- journal (no journald on this machine: only preflight and options are testable) -------

def test_journal_preflight_fails_clearly_without_journald(tmp_path):
    assert not os.path.exists(journal_plugin.JOURNAL_SOCKET), "this test expects no journald"
    problems = make(JournalTrigger, tmp_path).preflight()
    assert len(problems) == 1
    assert problems[0].fatal
    assert ("no systemd journal on this host; use the kmsg trigger for kernel lines"
            in problems[0].message)


def test_journal_options(tmp_path):
    trigger = make(JournalTrigger, tmp_path, pattern="fence (agent|failed", interval=0)
    messages = [p.message for p in trigger.preflight()]
    assert any("option 'pattern'" in m and "missing )" in m for m in messages)
    assert any("option 'interval'" in m for m in messages)
    with pytest.raises(OptionError) as err:
        build(JournalTrigger.Options, {"patern": "x"})
    assert "did you mean 'pattern'" in str(err.value)
    argv = make(JournalTrigger, tmp_path, pattern="x", unit="fenced.service").argv()
    assert argv[0] == "journalctl" and "--follow" in argv
    assert argv[-4:] == ["--unit", "fenced.service", "--grep", "x"]
