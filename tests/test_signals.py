"""Signals and lost terminals through the real CLI: one defined outcome for each state.

preflight: exit 2, nothing changed. armed: covered in test_run (operator trigger).
stopping/finalizing: noted and ignored, the run ends as it would have. packing: packing
stops, the work dir is kept, the pack command is printed, no archive under the final
name. SIGHUP, a hung-up terminal and closed stdout/stderr do not end a capture.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import List

import pytest

from tests.support.cli import finish
from tests.support.helpers import archive_of, extract, inspect, slow_pack_profile, wait_for

SIGNALS = [signal.SIGINT, signal.SIGTERM]


def entered(path: Path) -> List[str]:
    """'NAME PHASE' lines a test-faulty instance with entered_file wrote so far."""
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_signal_during_preflight_exits_2_and_changes_nothing(cli, tmp_path, sig):
    marks = tmp_path / "entered"
    profile = cli.profile(f"""\
collectors:
  marker: {{type: test-marker}}
  slow: {{type: test-faulty, hang_in: [preflight], hang_seconds: 60, entered_file: '{marks}'}}
triggers:
  never: {{type: test-never}}
""")
    proc = cli.start(*cli.capture_args(profile))
    wait_for(lambda: "slow preflight" in entered(marks), 30, "preflight of 'slow'")
    began = time.monotonic()
    proc.send_signal(sig)
    code, out, err = finish(proc, timeout=30)
    assert time.monotonic() - began < 5
    assert code == 2, err
    assert "interrupted before anything was started; nothing changed" in err
    assert out == ""
    assert list(cli.out.iterdir()) == []
    assert cli.event_list() == []
    assert entered(marks) == ["slow prepare", "slow preflight", "slow cleanup"]  # then only cleanup
    # The lock was taken first and let go: free, and it names no unfinished run
    lock = tmp_path / "run" / "lock"
    assert json.loads(lock.read_text())["finished"] is True


@pytest.mark.parametrize("phase, state", [("stop", "stopping"), ("finalize", "finalizing")])
def test_signals_while_stopping_or_finalizing_are_noted_and_the_run_finishes(cli, tmp_path,
                                                                             phase, state):
    marks = tmp_path / "entered"
    profile = cli.profile(f"""\
settings: {{compression: zstd, min_free_mb: 1}}
collectors:
  marker: {{type: test-marker}}
  slow: {{type: test-faulty, hang_in: [{phase}], hang_seconds: 1.5, entered_file: '{marks}'}}
triggers:
  end: {{type: timer, after: 0.1}}
""")
    proc = cli.start(*cli.capture_args(profile))
    wait_for(lambda: f"slow {phase}" in entered(marks), 30, f"{phase} of 'slow'")
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, timeout=30)
    assert code == 0, err
    assert f"SIGINT from the operator received while {state}: finishing that first" in err
    assert f"SIGTERM from the operator received while {state}: finishing that first" in err
    m = inspect(cli, archive_of(out))
    assert m["trigger"]["name"] == "end" and m["trigger"]["type"] == "timer"
    assert m["plugins"]["slow"]["status"] == "ok"
    assert m["plugins"]["marker"]["status"] == "ok"
    assert entered(marks)[-2:] == ["slow finalize", "slow cleanup"]


def partials(out: Path) -> List[str]:
    return [p.name for p in out.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_second_signal_while_packing_keeps_the_work_dir_and_pack_finishes_it(cli, tmp_path, sig):
    profile = cli.profile(slow_pack_profile("never: {type: test-never}"))
    proc = cli.start(*cli.capture_args(profile))
    workdir = Path(cli.wait_event("started", proc)["workdir"])
    cli.wait_event("armed", proc)
    proc.send_signal(signal.SIGINT)  # the first Ctrl-C: stop and pack
    wait_for(lambda: partials(cli.out), 30, "packing to begin")
    proc.send_signal(sig)  # the second one: stop packing
    code, out, err = finish(proc, timeout=30)
    assert code == 3, err
    assert f"finish it with: scoutfs-collect pack {workdir}" in err
    assert f"no archive written; work dir kept: {workdir}" in err
    assert out == ""
    final = cli.out / (workdir.name + ".tar.xz")
    assert not os.path.lexists(final)
    assert partials(cli.out) == []
    assert sorted(p.name for p in cli.out.iterdir()) == [workdir.name]
    assert [e["message"] for e in cli.event_list() if e["event"] == "error"] == ["packing interrupted"]

    blob = (workdir / "blob" / "blob.bin").read_bytes()
    result = cli.run("pack", str(workdir))
    assert result.returncode == 0, result.stderr
    archive = archive_of(result.stdout)
    assert archive == str(final)
    m = inspect(cli, archive)
    assert m["trigger"]["type"] == "operator"
    # Everything but packing had finished: the manifest must not say otherwise.
    assert m["result"]["exit_status"] == 0 and m["result"]["complete"] is True
    assert m["result"]["packed_by"] == "scoutfs-collect pack"
    (entry,) = [f for f in m["plugins"]["blob"]["files"] if f["path"] == "blob.bin"]
    assert entry["sha256"] == hashlib.sha256(blob).hexdigest()
    top = extract(archive, tmp_path / "x")
    assert (top / "blob" / "blob.bin").read_bytes() == blob


# --- lost terminals -----------------------------------------------------------------


NEVER = """\
settings: {compression: zstd, min_free_mb: 1}
collectors:
  marker: {type: test-marker}
triggers:
  never: {type: test-never}
"""


def write_calls(pid: int) -> int:
    """write() system calls made by the process so far (failed ones count too)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise AssertionError("no syscw in /proc/PID/io")


def test_terminal_hangup_does_not_end_the_capture(cli):
    """The runner on a real (pseudo) terminal that goes away, as when ssh drops."""
    master, slave = pty.openpty()

    def controlling_tty() -> None:  # after setsid(): make the pty our controlling terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        proc = subprocess.Popen(cli.argv(*cli.capture_args(cli.profile(NEVER))), env=cli.env,
                                cwd=cli.tmp, stdin=slave, stdout=slave, stderr=slave,
                                start_new_session=True, preexec_fn=controlling_tty)
    finally:
        os.close(slave)
    cli.procs.append(proc)
    try:
        cli.wait_event("armed", proc)
        wait_for(lambda: b"recording" in os.read(master, 65536), 10, "the live status line")
    finally:
        os.close(master)  # hang-up: SIGHUP to the session, EIO on every later write
    # The status line is rewritten every second: wait until a write has met the hang-up.
    writes = write_calls(proc.pid)
    wait_for(lambda: write_calls(proc.pid) > writes, 10, "a write after the hang-up")
    assert proc.poll() is None
    stopped = cli.run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert proc.wait(30) == 0
    events = [e["event"] for e in cli.event_list()]
    assert events[-2:] == ["archive", "finished"]
    archive = next(e["path"] for e in cli.event_list() if e["event"] == "archive")
    m = inspect(cli, archive)
    assert m["trigger"]["type"] == "operator" and "SIGTERM" in m["trigger"]["reason"]


@pytest.mark.parametrize("nohup", [False, True], ids=["closed-pipes", "nohup"])
def test_sighup_and_closed_stdout_stderr_do_not_end_the_capture(cli, nohup):
    argv = cli.argv(*cli.capture_args(cli.profile(NEVER)))
    proc = subprocess.Popen((["nohup"] if nohup else []) + argv, env=cli.env, cwd=cli.tmp,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    cli.procs.append(proc)
    cli.wait_event("armed", proc)
    proc.stdout.close()  # the reader is gone: every later write gets EPIPE
    proc.stderr.close()
    proc.send_signal(signal.SIGHUP)
    stopped = cli.run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert proc.wait(30) == 0
    assert [e["event"] for e in cli.event_list()][-2:] == ["archive", "finished"]
    archive = next(e["path"] for e in cli.event_list() if e["event"] == "archive")
    assert inspect(cli, archive)["plugins"]["marker"]["status"] == "ok"


WRAPPER = """\
import os, signal, sys
import scoutfs_collect.core.runner as runner
made = runner.make_workdir
def make_workdir(*args, **kwargs):
    path = made(*args, **kwargs)
    os.kill(os.getpid(), signal.{sig})  # the signal lands the instant the work dir exists
    return path
runner.make_workdir = make_workdir
from scoutfs_collect.core.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_signal_right_after_the_work_dir_is_made_still_gives_an_archive(cli, tmp_path, sig):
    """Between preflight and 'armed' there is no 'nothing changed' any more: the run
    goes on to an archive with trigger type operator, and leaves no stray work dir."""
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER.format(sig=sig.name))
    done = subprocess.run([sys.executable, str(script), *cli.capture_args(cli.profile(NEVER))],
                          env=cli.env, cwd=cli.tmp, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    archive = archive_of(done.stdout)
    assert [p.name for p in cli.out.iterdir()] == [os.path.basename(archive)]
    m = inspect(cli, archive)
    assert m["trigger"]["type"] == "operator" and sig.name in m["trigger"]["reason"]
    assert m["plugins"]["marker"]["status"] == "ok"


def test_ctrl_c_during_post_trigger_recording_stops_at_once(cli):
    profile = cli.profile("""\
settings: {post_trigger_seconds: 60}
collectors:
  marker: {type: test-marker}
triggers:
  t: {type: timer, after: 0.1}
""", "post.yaml")
    began = time.monotonic()
    proc = cli.start_capture(profile, port=7020)
    extra = cli.wait_event("post_trigger", proc)
    assert extra["seconds"] == 60 and extra["trigger"] == "t"
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert code == 0, err
    assert time.monotonic() - began < 30  # not the 60 s of extra recording
    triggered = cli.wait_event("triggered")
    assert triggered["trigger"] == "t" and triggered["type"] == "timer"  # the first one counts


def test_stop_with_a_symlink_at_the_lock_path_is_a_clear_error(cli):
    run = cli.tmp / "run"
    run.mkdir(mode=0o700)
    target = cli.tmp / "elsewhere"
    target.write_text("{}")
    (run / "lock").symlink_to(target)
    result = cli.run("stop")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "stop: cannot read the host lock" in result.stderr
