"""End to end through the real CLI: a real /dev/kmsg trigger, signals, stop, pack, the lock."""

from __future__ import annotations

import hashlib
import os
import signal
import stat

from tests.support.cli import finish
from tests.support.helpers import archive_of, extract, inspect, kmsg_write, unique


def kmsg_profile(cli, nonce: str, extra_collectors: str = "") -> str:
    return str(cli.profile(f"""\
description: e2e
settings: {{compression: zstd}}
collectors:
  marker: {{type: test-marker, text: {nonce}}}
{extra_collectors}
triggers:
  line:
    type: kmsg
    pattern: '{nonce} reconnect timed out, fencing'
"""))


def run_until_line(cli, profile: str, line: str):
    """Start a run, wait until it is armed, write ``line`` to the kernel log: its
    (returncode, stdout, stderr)."""
    proc = cli.start_capture(profile)
    cli.wait_event("armed", proc)
    kmsg_write(line)
    return finish(proc)


def run_until_signal(cli, profile: str, sig: signal.Signals):
    """Start a run, wait until it is armed, send it ``sig``: its (returncode, stdout, stderr)."""
    proc = cli.start_capture(profile)
    cli.wait_event("armed", proc)
    proc.send_signal(sig)
    return finish(proc)


def test_kmsg_trigger_ends_run_with_complete_archive(cli, tmp_path):
    nonce = unique("e2e")
    code, out, err = run_until_line(
        cli, kmsg_profile(cli, nonce),
        f"scoutfs f.000001.r.000002: client 10.0.0.2:7001 {nonce} reconnect timed out, fencing")
    assert code == 0, err
    archive = archive_of(out)  # the last line is "archive: PATH"
    assert archive.endswith(".tar.zst")
    assert stat.S_IMODE(os.stat(archive).st_mode) == 0o600
    # The work dir is gone after success; only the archive is left.
    assert [p.name for p in cli.out.iterdir()] == [os.path.basename(archive)]

    m = inspect(cli, archive)
    assert m["format"] == 1
    assert m["target"] == {"ip": "127.0.0.1", "port": 7001}
    assert m["profile"]["settings"]["output_dir"] == str(cli.out)  # the flag, as used
    assert m["trigger"]["name"] == "line" and m["trigger"]["type"] == "kmsg"
    assert nonce in m["trigger"]["reason"]
    for key in ("started", "armed", "triggered", "stopped", "finished"):
        assert isinstance(m["times"][key], float), key
    assert m["times"]["started"] <= m["times"]["armed"] <= m["times"]["triggered"]
    assert m["times"]["triggered"] <= m["times"]["stopped"] <= m["times"]["finished"]
    assert set(m["times"]["clocks"]["trigger"]) == {"realtime", "monotonic", "boottime"}
    marker = m["plugins"]["marker"]
    assert marker["status"] == "ok" and marker["error"] is None
    assert set(marker["phases"]) == {"prepare", "preflight", "start", "stop", "persist", "finalize",
                                     "cleanup"}
    assert marker["stopped_at"] >= m["trigger"]["time"]
    assert m["plugins"]["line"]["status"] == "ok"

    top = extract(archive, tmp_path / "x")
    assert top.name == os.path.basename(archive)[: -len(".tar.zst")]
    assert (top / "manifest.json").is_file()
    assert (top / "scoutfs-collect.log").is_file()
    text = (top / "marker" / "marker.txt").read_text()
    assert text.splitlines() == [nonce, "127.0.0.1:7001", "start stop finalize"]
    (entry,) = marker["files"]
    assert entry["path"] == "marker.txt"
    assert entry["sha256"] == hashlib.sha256(text.encode()).hexdigest()

    events = [e["event"] for e in cli.event_list()]
    for name in ("armed", "triggered", "stopped", "durable", "archive"):
        assert name in events
    # the trigger's thread sends "triggered" while the main thread stops: still in order
    assert (events.index("armed") < events.index("triggered") < events.index("stopped")
            < events.index("durable") < events.index("archive"))
    archive_event = next(e for e in cli.event_list() if e["event"] == "archive")
    assert archive_event["path"] == archive


def test_line_written_before_arm_does_not_trigger(cli):
    nonce = unique("early")
    kmsg_write(f"{nonce} reconnect timed out, fencing")
    code, out, err = run_until_signal(cli, kmsg_profile(cli, nonce), signal.SIGTERM)
    assert code == 0, err
    m = inspect(cli, archive_of(out))
    assert m["trigger"]["type"] == "operator"


def test_ctrl_c_while_armed_packs_with_operator_trigger(cli):
    code, out, err = run_until_signal(cli, kmsg_profile(cli, unique("sigint")), signal.SIGINT)
    assert code == 0, err
    m = inspect(cli, archive_of(out))
    assert m["trigger"]["type"] == "operator"
    assert "SIGINT" in m["trigger"]["reason"]
    assert m["plugins"]["marker"]["status"] == "ok"


def test_stop_command_ends_the_running_instance(cli):
    proc = cli.start_capture(kmsg_profile(cli, unique("stopcmd")))
    armed = cli.wait_event("armed", proc)
    assert armed["triggers"] == ["line"]
    result = cli.run("stop")
    assert result.returncode == 0, result.stderr
    assert "has finished" in result.stderr
    code, out, err = finish(proc)
    assert code == 0
    m = inspect(cli, archive_of(out))
    assert m["trigger"]["type"] == "operator" and "SIGTERM" in m["trigger"]["reason"]


def test_stop_without_a_running_instance(cli):
    result = cli.run("stop")
    assert result.returncode == 2
    assert "no scoutfs-collect is running" in result.stderr


def test_second_instance_is_refused_with_the_first_pid(cli):
    profile = kmsg_profile(cli, unique("lock"))
    first = cli.start_capture(profile)
    cli.wait_event("armed", first)
    second = cli.run("--plugin-dir", str(cli.plugin_dir()), "--profile", profile,
                     "--output-dir", str(cli.out), "127.0.0.1", "7001")
    assert second.returncode == 2
    assert f"another scoutfs-collect is already running (pid {first.pid})" in second.stderr
    first.send_signal(signal.SIGTERM)
    assert finish(first)[0] == 0


def test_killed_run_is_packed_by_pack_and_reported_by_next_run(cli, tmp_path):
    profile = kmsg_profile(cli, unique("killed"))
    proc = cli.start_capture(profile)
    started = cli.wait_event("started", proc)
    cli.wait_event("armed", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    workdir = started["workdir"]

    nxt = cli.start_capture(profile)
    cli.wait_event("armed", nxt, nth=2)
    nxt.send_signal(signal.SIGTERM)
    code, _out, err = finish(nxt)
    assert code == 0
    assert f"scoutfs-collect pack {workdir}" in err

    result = cli.run("pack", workdir)
    assert result.returncode == 0, result.stderr
    archive = archive_of(result.stdout)
    m = inspect(cli, archive)
    assert m["result"]["complete"] is False
    assert m["plugins"]["marker"]["type"] == "test-marker"
    top = extract(archive, tmp_path / "x")
    assert (top / "manifest.json").is_file()


def test_failing_plugin_is_recorded_and_others_still_archived(cli):
    nonce = unique("faulty")
    profile = kmsg_profile(cli, nonce, "  broken: {type: test-faulty, raise_in: [stop, finalize]}\n")
    code, out, err = run_until_line(cli, profile, f"{nonce} reconnect timed out, fencing")
    assert code == 1, err
    m = inspect(cli, archive_of(out))
    broken = m["plugins"]["broken"]
    assert broken["status"] == "failed"
    assert "injected failure in stop" in broken["error"]  # finalize still runs after a failed stop
    assert any("injected failure in finalize" in e for e in broken["errors"])
    assert m["plugins"]["marker"]["status"] == "ok"
    assert m["plugins"]["marker"]["files"][0]["path"] == "marker.txt"


def test_hanging_plugin_times_out_and_run_goes_on(cli):
    nonce = unique("hang")
    profile = kmsg_profile(cli, nonce,
                           "  stuck: {type: test-faulty, hang_in: [stop], timeout: 1}\n")
    code, out, err = run_until_line(cli, profile, f"{nonce} reconnect timed out, fencing")
    assert code == 1, err
    m = inspect(cli, archive_of(out))
    stuck = m["plugins"]["stuck"]
    assert stuck["status"] == "timeout"
    assert "stop: did not finish within 1 s" in stuck["error"]
    assert m["plugins"]["marker"]["status"] == "ok"
