"""run_command (system/proc.py run): a short command gets ChildProcess's guarantees. It dies
with a SIGKILLed runner, a Ctrl-C on the terminal does not reach it, and on its timeout
everything it started is killed too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from scoutfs_collect import run_command
from tests.support.helpers import wait_for

REPO = Path(__file__).resolve().parents[1]

# A command that writes its pid into the file argv[1] once it is ready (signal handlers
# set), then waits for signals: SIGINT is noted, SIGTERM prints what came and exits 0.
CHILD = textwrap.dedent("""\
    import os, signal, sys
    got = []
    signal.signal(signal.SIGINT, lambda *a: got.append("INT"))
    def term(*a):
        print(" ".join(got + ["TERM"]), flush=True)
        os._exit(0)
    signal.signal(signal.SIGTERM, term)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    while True:
        signal.pause()
""")

# A runner stand-in: run_command(CHILD) from a thread (argv[1]: the ready file), the result
# as JSON on stdout; a SIGINT to it is written into argv[2].
RUNNER = textwrap.dedent("""\
    import json, signal, sys, threading
    from scoutfs_collect import run_command
    ready, noted, child = sys.argv[1], sys.argv[2], sys.argv[3]
    signal.signal(signal.SIGINT, lambda *a: open(noted, "w").write("SIGINT"))
    out = {}
    def work():
        done = run_command([sys.executable, "-c", child, ready], timeout=600)
        out.update(returncode=done.returncode, stdout=done.stdout)
    t = threading.Thread(target=work)
    t.start()
    t.join()
    print(json.dumps(out))
""")


def started_child(tmp_path: Path):
    """Start RUNNER (leading its own process group, as a terminal's foreground job does);
    return it and its run_command child, once the child is ready."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(tmp_path / "ready"), str(tmp_path / "noted"), CHILD],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    pid = int(wait_for(lambda: (tmp_path / "ready").exists() and (tmp_path / "ready").read_text(),
                       what="the child to be ready"))
    child = psutil.Process(pid)
    assert child.ppid() == runner.pid
    return runner, child


def gone(process: psutil.Process) -> bool:
    """Exited (a zombie whose new parent has not reaped it yet counts as exited)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def end(*processes) -> None:
    """Leave nothing behind, whatever the test found."""
    for p in processes:
        try:
            p.kill()
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass


def test_a_run_command_child_dies_with_a_sigkilled_runner(tmp_path):
    runner, child = started_child(tmp_path)
    try:
        runner.send_signal(signal.SIGKILL)
        runner.communicate(timeout=30)
        wait_for(lambda: gone(child), what=f"run_command's child {child.pid} to die with its runner")
    finally:
        end(runner, child)


def test_ctrl_c_on_the_terminal_does_not_reach_a_run_command_child(tmp_path):
    runner, child = started_child(tmp_path)
    try:
        os.killpg(runner.pid, signal.SIGINT)  # what the terminal sends its foreground job
        wait_for(lambda: (tmp_path / "noted").exists(), what="the runner to get the SIGINT")
        # The child notes a SIGINT; one sent before this SIGTERM is handled before it.
        child.send_signal(signal.SIGTERM)
        out, err = runner.communicate(timeout=30)
        assert runner.returncode == 0, err
        assert json.loads(out) == {"returncode": 0, "stdout": "TERM\n"}
    finally:
        end(runner, child)


def test_run_command_timeout_kills_what_the_command_started(tmp_path):
    # The shell prints its pid and its background sleep's, then waits: the timeout must end both.
    with pytest.raises(subprocess.TimeoutExpired) as info:
        run_command(["sh", "-c", "echo $$; sleep 300 & echo $!; wait"], timeout=3)
    pids = [int(p) for p in (info.value.stdout or b"").split()]
    assert len(pids) == 2, f"the shell did not start its sleep within the timeout: {pids}"
    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue  # already gone and reaped
    try:
        for p in processes:
            wait_for(lambda p=p: gone(p), what=f"pid {p.pid} of the timed-out command to be killed")
    finally:
        end(*processes)


def test_run_command_returns_the_completed_process(tmp_path):
    done = run_command(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert isinstance(done, subprocess.CompletedProcess)
    assert (done.args, done.returncode, done.stdout, done.stderr) == (
        ["sh", "-c", "echo out; echo err >&2; exit 3"], 3, "out\n", "err\n")
    with pytest.raises(FileNotFoundError):
        run_command([str(tmp_path / "no-such-program")])
