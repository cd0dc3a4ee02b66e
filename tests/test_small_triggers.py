"""The timer, file and journal triggers."""

from __future__ import annotations

import os
import sys
import time

import pytest

from scoutfs_collect.builtin_plugins.triggers import file as file_plugin
from scoutfs_collect.builtin_plugins.triggers import journal as journal_plugin
from scoutfs_collect.builtin_plugins.triggers.file import FileTrigger
from scoutfs_collect.builtin_plugins.triggers.journal import JournalTrigger
from scoutfs_collect.builtin_plugins.triggers.timer import TimerTrigger
from scoutfs_collect.core.registry import load
from scoutfs_collect.plugin.options import OptionError, build
from tests.support.helpers import Fired, make_plugin, wait_for


@pytest.fixture
def workdir(tmp_path):
    """The plugin's own output dir, apart from the files a test makes in tmp_path."""
    return tmp_path / "work"


def test_registered_as_builtins():
    registry = load()
    for name in ("timer", "file", "journal", "kmsg"):
        assert registry.get(name, "trigger").type_name == name


# --- timer -------------------------------------------------------------------------------

def test_timer_fires_after_the_delay_not_before(workdir, armed):
    trigger = make_plugin(TimerTrigger, workdir, after=0.3)
    assert trigger.preflight() == []
    t0 = time.monotonic()
    fired = armed(trigger)
    assert fired.event.wait(2)
    assert fired.at[0] - t0 >= 0.3
    assert fired.at[0] - t0 < 0.8
    assert fired.reasons == ["timer: 0.3 s elapsed"]


def test_timer_disarm_before_firing_is_quick_and_silent(workdir):
    trigger = make_plugin(TimerTrigger, workdir, after=60)
    fired = Fired()
    trigger.arm(fired)
    t0 = time.monotonic()
    trigger.disarm()
    assert time.monotonic() - t0 < 0.5
    assert fired.reasons == []


def test_timer_options(workdir):
    assert make_plugin(TimerTrigger, workdir).options.after == 10.0
    assert make_plugin(TimerTrigger, workdir, after=-1).preflight()[0].message.startswith("option 'after'")
    with pytest.raises(OptionError):
        build(TimerTrigger.Options, {"after": "soon"})


# --- file --------------------------------------------------------------------------------

def test_file_trigger_fires_when_the_file_is_created(workdir, tmp_path, armed):
    path = tmp_path / "dump-now"
    trigger = make_plugin(FileTrigger, workdir, path=str(path))
    assert trigger.preflight() == []
    fired = armed(trigger)
    assert not fired.event.wait(0.05)  # nothing there yet
    t0 = time.monotonic()
    path.write_text("node3 hung in fencing\nmore\n")
    assert fired.event.wait(2)
    assert fired.at[0] - t0 < 0.2  # inotify: no 0.5 s polling interval
    assert fired.reasons[0].startswith(f"file {path} appeared")
    assert trigger.ctx.details["method"] == "inotify"


def test_file_trigger_sees_a_rename_and_passes_the_note(workdir, tmp_path, armed):
    path = tmp_path / "dump-now"
    fired = armed(make_plugin(FileTrigger, workdir, path=str(path)))
    tmp = tmp_path / "dump-now.tmp"
    tmp.write_text("operator asked\n")
    os.rename(tmp, path)
    assert fired.event.wait(2)
    assert fired.reasons == [f"file {path} appeared: operator asked"]


def test_file_trigger_falls_back_to_checking_when_the_directory_goes(workdir, tmp_path, armed,
                                                                    monkeypatch):
    monkeypatch.setattr(file_plugin, "FALLBACK_INTERVAL", 0.02)
    watched = tmp_path / "d"
    watched.mkdir()
    trigger = make_plugin(FileTrigger, workdir, path=str(watched / "dump-now"))
    fired = armed(trigger)
    wait_for(lambda: trigger.ctx.details.get("method") == "inotify", 2, "inotify watch")
    watched.rmdir()  # the watch goes with it (IN_IGNORED)
    wait_for(lambda: trigger.ctx.details["method"] == "poll", 2, "fallback to checking")
    watched.mkdir()
    (watched / "dump-now").write_text("")
    assert fired.event.wait(2)
    assert fired.reasons == [f"file {watched / 'dump-now'} appeared"]


def test_file_trigger_preflight(workdir, tmp_path):
    assert "empty" in make_plugin(FileTrigger, workdir).preflight()[0].message
    existing = tmp_path / "already"
    existing.write_text("")
    (problem,) = make_plugin(FileTrigger, workdir, path=str(existing)).preflight()
    assert "already exists" in problem.message and problem.fix == f"remove it first: rm {existing}"
    (problem,) = make_plugin(FileTrigger, workdir, path=str(tmp_path / "no" / "x")).preflight()
    assert "does not exist" in problem.message


# --- journal --------------------------------------------------------------------------------

def test_journal_preflight_fails_clearly_without_journald(workdir, monkeypatch):
    # Point the journald socket check at a path that does not exist, so the test holds on
    # hosts that do run journald too (these machines have none).
    monkeypatch.setattr(journal_plugin, "JOURNAL_SOCKET", str(workdir / "no-journal-socket"))
    problems = make_plugin(JournalTrigger, workdir).preflight()
    assert len(problems) == 1
    assert problems[0].fatal
    assert ("no systemd journal on this host; use the kmsg trigger for kernel lines"
            in problems[0].message)


def test_journal_options(workdir):
    trigger = make_plugin(JournalTrigger, workdir, pattern="fence (agent|failed")
    messages = [p.message for p in trigger.preflight()]
    assert any("option 'pattern'" in m and "missing )" in m for m in messages)
    with pytest.raises(OptionError) as err:
        build(JournalTrigger.Options, {"patern": "x"})
    assert "did you mean 'pattern'" in str(err.value)
    argv = make_plugin(JournalTrigger, workdir, pattern="x", unit="fenced.service").argv()
    assert argv[0] == "journalctl" and "--follow" in argv
    assert argv[-4:] == ["--unit", "fenced.service", "--grep", "x"]


def journalctl_stand_in(script: str):
    """``JournalTrigger.argv`` replaced by a program that prints what ``script`` prints and
    then waits to be ended. This machine has no journald, so the real journalctl has no
    journal to follow; the stand-in plays its output side, which is what the trigger reads."""
    return lambda self: [sys.executable, "-c", script + "\nimport signal\nsignal.pause()"]


def test_journal_trigger_matches_lines_read_through_the_pipe(workdir, monkeypatch):
    script = ("import sys, time\n"
              "sys.stdout.write('Fence agent failed (other case)\\nfence ag')\n"
              "sys.stdout.flush()\n"
              "time.sleep(0.05)  # the rest of the line in a later write\n"
              "sys.stdout.write('ent failed on node3\\n')\n"
              "sys.stdout.flush()\n")
    monkeypatch.setattr(JournalTrigger, "argv", journalctl_stand_in(script))
    trigger = make_plugin(JournalTrigger, workdir, pattern="fence agent failed")
    fired = Fired()
    trigger.arm(fired)
    child = trigger._child
    try:
        assert os.listdir(workdir) == ["journalctl.stderr"]  # the fifo is gone once armed
        assert fired.event.wait(5)
    finally:
        trigger.disarm()
    assert fired.reasons == ["fence agent failed on node3"]
    assert child.returncode is not None  # disarm ended it
    assert trigger.ctx.failures == []


def test_journal_trigger_reports_journalctl_exiting(workdir, armed, monkeypatch):
    monkeypatch.setattr(JournalTrigger, "argv",
                        lambda self: [sys.executable, "-c", "import sys; sys.exit('no journal')"])
    trigger = make_plugin(JournalTrigger, workdir)
    fired = armed(trigger)
    wait_for(lambda: trigger.ctx.failures, 5, "ctx.fail")
    assert trigger.ctx.failures == ["journalctl exited with status 1: no journal"]
    trigger._thread.join(2)
    assert not trigger._thread.is_alive()  # the end of the pipe ended the watcher
    assert fired.reasons == []
