"""``scoutfs-collect stop --wait durable --type --reason --timeout`` against a real run: the
answer comes once the data is on disk, the ftrace ring's raw pages included, and the
manifest records the requested trigger."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.support.cli import finish
from tests.support.helpers import archive_of, inspect, unique

pytestmark = pytest.mark.usefixtures("tracefs_untouched")
TRACEFS = "/sys/kernel/tracing"


def ftrace_profile(cli, instance: str) -> str:
    return str(cli.profile(f"""\
settings: {{compression: zstd, min_free_mb: 1}}
collectors:
  dmesg: {{}}
  ftrace: {{instance: {instance}, events: ["sched:sched_switch"], buffer_size_kb: 256, freeze_on: []}}
triggers:
  never: {{type: timer, after: 3600}}
"""))


def start(cli, profile: str):
    return cli.start("--profile", profile, "--output-dir", str(cli.out),
                     "--events-file", str(cli.events), "127.0.0.1", "7001")


def test_stop_wait_durable_answers_after_the_raw_pages_are_on_disk(cli):
    instance = unique("sc_durable")
    proc = start(cli, ftrace_profile(cli, instance))
    cli.wait_event("armed", proc)
    with open(f"{TRACEFS}/instances/{instance}/trace_marker", "w") as f:
        f.write("durable-stop-marker\n")
    result = cli.run("stop", "--wait", "durable", "--timeout", "30", "--type", "fence-hook",
                     "--reason", "fence-hook on leader1: rid 00000000000000ab (client_recovery)")
    assert result.returncode == 0, result.stderr
    assert "durable after" in result.stderr
    events = {e["event"]: e for e in cli.event_list()}
    assert "durable" in events  # answered no earlier than the run's own durable event
    code, out, err = finish(proc)
    assert code == 0, err
    m = inspect(cli, archive_of(out))
    assert m["trigger"]["type"] == "fence-hook"
    assert "rid 00000000000000ab" in m["trigger"]["reason"]
    det = m["plugins"]["ftrace"]["details"]
    assert det["raw_bytes"] > 0 and det["raw_durable_s"] >= 0
    # the raw pages were fsync'ed in persist(): before the run reported durable
    assert m["plugins"]["ftrace"]["stopped_at"] <= events["durable"]["time"]
    raw = [f for f in m["plugins"]["ftrace"]["files"] if f["path"].startswith("raw/cpu")]
    assert sum(f["size"] for f in raw) == det["raw_bytes"]


def test_durable_means_the_same_after_a_peer_stop(cli):
    """The normal order in a cluster: the coordinator's peer stop first, the fence hook's
    ``stop --wait durable`` after it. At the answer the raw pages are on disk: every one
    was written before the run's durable event, whoever stopped it."""
    instance = unique("sc_peer_durable")
    profile = cli.profile(f"""\
settings: {{compression: zstd, min_free_mb: 1, keep_workdir: true}}
collectors:
  ftrace: {{instance: {instance}, events: ["sched:sched_switch"], buffer_size_kb: 2048, freeze_on: []}}
triggers:
  never: {{type: timer, after: 3600}}
""")
    proc = start(cli, str(profile))
    cli.wait_event("armed", proc)
    workdir = cli.wait_event("started")["workdir"]
    peer = cli.run("stop", "--no-wait", "--type", "peer", "--reason", "th2 triggered")
    assert peer.returncode == 0, peer.stderr
    durable = cli.run("stop", "--wait", "durable", "--timeout", "30", "--type", "fence-hook")
    assert durable.returncode == 0, durable.stderr
    code, out, err = finish(proc)
    assert code == 0, err
    m = inspect(cli, archive_of(out))
    assert m["trigger"]["type"] == "peer"  # the first request decides the trigger
    durable_at = next(e["time"] for e in cli.event_list() if e["event"] == "durable")
    raw = sorted((Path(workdir) / "ftrace" / "raw").glob("cpu*"))
    assert raw and sum(p.stat().st_size for p in raw) == m["plugins"]["ftrace"]["details"]["raw_bytes"]
    assert all(p.stat().st_mtime <= durable_at for p in raw), "raw pages written after 'durable'"


def test_stop_timeout_when_the_run_does_not_answer(cli):
    proc = start(cli, ftrace_profile(cli, unique("sc_sigstop")))
    cli.wait_event("armed", proc)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        result = cli.run("stop", "--wait", "durable", "--timeout", "1", "--reason", "test")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert result.returncode == 1
    assert "not durable within 1 s" in result.stderr
    code, out, err = finish(proc)  # the request was queued in the socket: it stops now
    assert code == 0, err
    assert inspect(cli, archive_of(out))["trigger"]["reason"] == "test"


def test_stop_wait_durable_without_a_running_instance(cli):
    result = cli.run("stop", "--wait", "durable", "--timeout", "2")
    assert result.returncode == 2
    assert "no scoutfs-collect is running" in result.stderr


def test_control_socket_is_private_and_removed_at_the_end(cli):
    proc = start(cli, ftrace_profile(cli, unique("sc_sock")))
    cli.wait_event("armed", proc)
    sock = cli.tmp / "run" / "control.sock"
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
    assert cli.run("stop").returncode == 0
    finish(proc)
    assert not sock.exists()


def test_stop_with_a_reason_waits_for_the_end_of_the_run(cli):
    proc = start(cli, ftrace_profile(cli, unique("sc_reason")))
    cli.wait_event("armed", proc)
    result = cli.run("stop", "--reason", "maintenance window", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    assert "its trigger: operator: maintenance window" in result.stderr
    assert "finished after" in result.stderr
    code, out, err = finish(proc)
    assert code == 0, err
    assert inspect(cli, archive_of(out))["trigger"]["reason"] == "maintenance window"
