"""What an operator does by habit must not destroy what a live recorder holds (issue 15):
typing the command again, ``check`` beside a live run, a cluster node session on a node
that already records. And the core's own promises under faults: a signal handler takes no
lock, plugin code that raises or hangs outside a phase is a recorded failure, a bug of
ours after the start is exit 3 with the work dir named."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.cli import finish
from tests.support.helpers import archive_of, extract, inspect, unique

pytestmark = pytest.mark.usefixtures("tracefs_untouched")
TRACEFS = Path("/sys/kernel/tracing")


def marker(instance: str, text: str) -> None:
    with open(TRACEFS / "instances" / instance / "trace_marker", "w") as f:
        f.write(text + "\n")


def test_second_run_check_and_node_session_leave_the_live_ring_alone(cli, tmp_path):
    """The ring holds only our trace_marker lines (no event enabled): a busy event such as
    sched_switch overwrote the 512 KB ring on a loaded host and lost the first marker."""
    instance = unique("sc_live")
    profile = cli.profile(f"""\
settings: {{compression: zstd, min_free_mb: 1}}
collectors:
  marker: {{type: test-marker}}
  ftrace: {{instance: {instance}, events: [], buffer_size_kb: 512, freeze_on: []}}
triggers:
  never: {{type: test-never}}
""")
    first = cli.start_capture(profile)
    cli.wait_event("armed", first)
    marker(instance, "before-the-second-run")
    again = cli.run(*cli.capture_args(profile))  # the admin types the same command again
    assert again.returncode == 2
    assert f"another scoutfs-collect is already running (pid {first.pid})" in again.stderr
    assert "stale" not in again.stderr and "removed" not in again.stderr
    node = cli.run("run", "--control-stdin", *cli.capture_args(profile))  # a cluster node session
    assert node.returncode == 2 and "already running" in node.stderr
    check = cli.run("check", *cli.capture_args(profile))
    assert check.returncode == 2
    assert f"belongs to the running scoutfs-collect (pid {first.pid})" in check.stderr
    assert (TRACEFS / "instances" / instance).is_dir()
    marker(instance, "after-the-second-run")
    assert cli.run("stop").returncode == 0
    code, out, err = finish(first)
    assert code == 0, err
    m = inspect(cli, archive_of(out))
    assert m["plugins"]["ftrace"]["status"] == "ok", m["plugins"]["ftrace"]
    text = (extract(archive_of(out), tmp_path / "x") / "ftrace" / "trace.txt").read_text()
    assert "before-the-second-run" in text and "after-the-second-run" in text


def test_plugin_code_that_raises_or_hangs_outside_a_phase_is_a_recorded_failure(cli):
    """bytes_written raising (every status line: the first comes a second after armed,
    before the timer's 2.5 s), disk_estimate hanging, a trigger's disarm
    hanging, the triggered notify hook hanging: each one error event, the run goes on and
    packs; the hook runs only after the data is durable."""
    profile = cli.profile("""\
settings: {compression: zstd, min_free_mb: 1, status_interval: 0.05, phase_timeout: 1}
collectors:
  marker: {type: test-marker}
  counting: {type: test-faulty, raise_in: [bytes_written]}
  estimating: {type: test-faulty, hang_in: [disk_estimate]}
triggers:
  end: {type: timer, after: 2.5}
  stuck: {type: test-faulty-trigger, hang_in: [disarm]}
""")
    env_hook = {"SCOUTFS_COLLECT_TEST_HANG_HOOK": "triggered"}
    proc = subprocess.Popen(cli.argv(*cli.capture_args(profile)), env={**cli.env, **env_hook},
                            cwd=cli.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cli.procs.append(proc)
    code, out, err = finish(proc, timeout=60)
    assert code == 1, err
    m = inspect(cli, archive_of(out))
    plugins = m["plugins"]
    assert plugins["counting"]["status"] == "failed"
    assert plugins["counting"]["error"].startswith("bytes_written: RuntimeError: injected failure")
    assert plugins["estimating"]["status"] == "failed"
    assert "disk_estimate: " in plugins["estimating"]["error"]
    assert plugins["stuck"]["status"] == "timeout" and "disarm" in plugins["stuck"]["error"]
    assert plugins["marker"]["status"] == "ok"
    assert any("plugin hook scoutfs_collect_triggered failed" in n for n in m["result"]["notes"])
    events = cli.event_list()
    errors = [(e["plugin"], e["message"].split(":")[0]) for e in events if e["event"] == "error"]
    assert sorted(errors) == sorted([("counting", "bytes_written"), ("estimating", "disk_estimate"),
                                     ("stuck", "disarm"), ("hooks", "scoutfs_collect_triggered")])
    names = [e["event"] if e["event"] != "error" else e["plugin"] for e in events]
    assert names.index("durable") < names.index("hooks")  # the slow hook never delayed durable


UNEXPECTED = """\
import sys
import scoutfs_collect.core.runner as runner
def wait_armed(*args, **kwargs):
    raise RuntimeError("a bug of ours while armed")
runner.wait_armed = wait_armed
from scoutfs_collect.core.cli import main
sys.exit(main())
"""


def test_an_unexpected_error_after_the_start_is_exit_3_with_the_work_dir_named(cli, tmp_path):
    """A fault in our own code cannot be made with a real input: the wrapper replaces the
    armed wait with one that raises, the only way to reach that path on purpose."""
    instance = unique("sc_bug")
    profile = cli.profile(f"""\
settings: {{compression: zstd, min_free_mb: 1}}
collectors:
  marker: {{type: test-marker}}
  ftrace: {{instance: {instance}, events: ["sched:sched_switch"], buffer_size_kb: 256, freeze_on: []}}
triggers:
  never: {{type: test-never}}
""")
    script = tmp_path / "wrapper.py"
    script.write_text(UNEXPECTED)
    done = subprocess.run([sys.executable, str(script), *cli.capture_args(profile)], env=cli.env,
                          cwd=cli.tmp, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert "unexpected error: RuntimeError: a bug of ours while armed" in done.stderr
    workdir = cli.wait_event("started")["workdir"]
    assert f"scoutfs-collect pack {workdir}" in done.stderr
    assert not (TRACEFS / "instances" / instance).exists()  # cleanup ran: nothing left behind
    packed = cli.run("pack", workdir)
    assert packed.returncode == 0, packed.stderr
    assert inspect(cli, archive_of(packed.stdout))["plugins"]["marker"]["status"] == "ok"


def test_the_lock_is_taken_before_any_plugin_runs(cli):
    """A plugin's prepare of the second run never runs beside a live one."""
    log = cli.tmp / "entered.txt"
    profile = cli.profile(textwrap.dedent(f"""\
        collectors:
          probe: {{type: test-faulty, entered_file: {log}}}
        triggers:
          never: {{type: test-never}}
        """))
    first = cli.start_capture(profile)
    cli.wait_event("armed", first)
    before = log.read_text()
    second = cli.run(*cli.capture_args(profile))
    assert second.returncode == 2
    assert log.read_text() == before  # no prepare, no preflight, no cleanup of the second
    first.send_signal(signal.SIGINT)
    code, _out, err = finish(first)
    assert code == 0, err
    assert log.read_text().count("probe prepare") == 1  # the first run's only
