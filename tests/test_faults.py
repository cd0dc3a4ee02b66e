"""The fault matrix through the real CLI: plugins that raise, hang or run slowly in each
phase, a collector's child killed mid-run, the runner itself SIGKILLed, bad input during
a run. Each run must end within its phase timeouts plus a margin, keep the data of every
other collector and say in the manifest what went wrong.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List

import psutil
import pytest

from scoutfs_collect.demo import fixture
from scoutfs_collect.system.tracefs import TraceInstance
from tests.support.cli import finish
from tests.support.helpers import (  # archive_of, inspect: test_disk_space and test_security import them here
    archive_of,
    extract,
    inspect,
    kmsg_write,
    slow_pack_profile,
    unique,
    wait_for,
)

MARGIN = 5.0  # seconds on top of the phase timeouts: Python start-up, packing, CI noise


def archived_names(archive: str) -> List[str]:
    """Member paths below the archive's top directory, as the system tar lists them."""
    listing = subprocess.run(["tar", "-taf", archive], capture_output=True, text=True, check=True)
    return [n.split("/", 1)[1] for n in listing.stdout.splitlines() if "/" in n]


# --- plugins that raise, hang or run slowly ---------------------------------------------

FAULTS = {  # instance name -> (options, the manifest status it must end with)
    "raiser": ("raise_in: [{p}]", "failed"),
    "hanger": ("hang_in: [{p}]", "timeout"),  # blocks for an hour
    "sloth": ("hang_in: [{p}], hang_seconds: 2.5", "timeout"),  # finishes after its timeout
}


def faulty(kind: str, phase: str) -> str:
    type_name = "test-faulty" if kind == "collector" else "test-faulty-trigger"
    return "".join(f"  {name}: {{type: {type_name}, {opts.format(p=phase)}, timeout: 1}}\n"
                   for name, (opts, _status) in FAULTS.items())


@pytest.mark.parametrize("kind, phase", [("collector", "start"), ("collector", "stop"),
                                         ("collector", "persist"),
                                         ("collector", "finalize"), ("trigger", "arm"),
                                         ("trigger", "disarm")])
def test_fault_in_a_run_phase_is_recorded_and_the_others_are_archived(cli, kind, phase):
    after = 0.5
    profile = cli.profile(
        "settings: {compression: zstd, min_free_mb: 1}\ncollectors:\n"
        "  marker: {type: test-marker}\n  dmesg: {}\n"
        + (faulty(kind, phase) if kind == "collector" else "")
        + f"triggers:\n  end: {{type: timer, after: {after}}}\n"
        + (faulty(kind, phase) if kind == "trigger" else ""))
    began = time.monotonic()
    proc = cli.start_capture(profile)
    code, out, err = finish(proc, timeout=60)
    elapsed = time.monotonic() - began
    # start and arm run one plugin after the other, the other phases all at once.
    serial = phase in ("start", "arm")
    bound = after + (3 if serial else 1) * 1.0 + MARGIN
    assert elapsed < bound, f"run took {elapsed:.1f} s, bound {bound:.1f} s"
    assert code == 1, err
    archive = archive_of(out)
    m = inspect(cli, archive)
    assert m["trigger"]["name"] == "end" and m["trigger"]["type"] == "timer"
    plugins = m["plugins"]
    for name, (_opts, status) in FAULTS.items():
        rec = plugins[name]
        assert rec["status"] == status, (name, rec)
        want = (f"{phase}: RuntimeError: injected failure in {phase}" if status == "failed"
                else f"{phase}: did not finish within 1 s")
        assert rec["error"] == want, (name, rec)
        assert phase in rec["phases"]
    for name in ("marker", "dmesg", "end"):
        assert plugins[name]["status"] == "ok", (name, plugins[name])
    assert [f["path"] for f in plugins["marker"]["files"]] == ["marker.txt"]
    assert plugins["dmesg"]["files"], plugins["dmesg"]
    names = archived_names(archive)
    assert "marker/marker.txt" in names
    for f in plugins["dmesg"]["files"]:
        assert f"dmesg/{f['path']}" in names
    # every failed phase is an error event naming its plugin, and nothing else is
    errors = [(e["plugin"], e["message"]) for e in cli.event_list() if e["event"] == "error"]
    assert sorted(errors) == sorted((name, plugins[name]["error"]) for name in FAULTS)


@pytest.mark.parametrize("kind", ["collector", "trigger"])
def test_fault_in_preflight_stops_the_run_before_anything_changes(cli, kind):
    profile = cli.profile(
        "collectors:\n  marker: {type: test-marker}\n"
        + (faulty(kind, "preflight") if kind == "collector" else "")
        + "triggers:\n  end: {type: timer, after: 30}\n"
        + (faulty(kind, "preflight") if kind == "trigger" else ""))
    began = time.monotonic()
    code, out, err = finish(cli.start_capture(profile), timeout=60)
    elapsed = time.monotonic() - began
    assert elapsed < 2 * 1.0 + MARGIN  # the hanger and the sloth each cost their timeout
    assert code == 2, err
    assert "error: raiser: preflight RuntimeError: injected failure in preflight" in err
    assert "error: hanger: preflight did not finish within 1 s" in err
    assert "error: sloth: preflight did not finish within 1 s" in err
    assert "nothing was started" in err
    assert out == ""
    assert list(cli.out.iterdir()) == []
    errors = [(e["plugin"], e["message"]) for e in cli.event_list() if e["event"] == "error"]
    assert [e["event"] for e in cli.event_list()] == ["error"] * len(errors)
    assert {p for p, _ in errors} == {"raiser", "hanger", "sloth", "core"}


# --- real child processes: tcpdump killed, the runner killed ---------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcpdumps(port: int) -> List[psutil.Process]:
    """Running tcpdump processes whose argv carries our (test-unique) port."""
    out = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        if p.info["name"] == "tcpdump" and p.info["status"] != psutil.STATUS_ZOMBIE \
                and any(f"port {port}" in a for a in p.info["cmdline"] or []):
            out.append(p)
    return out


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def leftovers() -> Iterator[Dict]:
    """Records the ports and tracefs instances a test uses; kills and removes them after."""
    used: Dict = {"ports": [], "instances": []}
    yield used
    left = [p for port in used["ports"] for p in tcpdumps(port)]
    for p in left:
        p.kill()
    stale = [name for name in used["instances"] if TraceInstance(name).exists()]
    for name in stale:
        TraceInstance(name).remove()
    assert not left, f"tcpdump left running: {[p.pid for p in left]}"
    assert not stale, f"tracefs instances left: {stale}"


def capture_profile(cli, port: int, instance: str = "") -> Path:
    ftrace = (f"  ftrace: {{instance: {instance}, events: ['sched:sched_switch'], "
              "buffer_size_kb: 256}\n") if instance else ""
    return cli.profile(
        "settings: {compression: zstd, min_free_mb: 1}\ncollectors:\n"
        "  marker: {type: test-marker}\n  dmesg: {}\n"
        f"  tcpdump: {{interface: lo, heartbeat_timeout: 0, file_size_mb: 1}}\n{ftrace}"
        "triggers:\n  never: {type: test-never}\n")


def test_killed_tcpdump_is_recorded_and_the_others_go_on(cli, leftovers):
    port = free_port()
    leftovers["ports"].append(port)
    proc = cli.start_capture(capture_profile(cli, port), port=port)
    cli.wait_event("armed", proc)
    (tcpdump,) = tcpdumps(port)
    assert tcpdump.ppid() == proc.pid
    tcpdump.kill()
    error = cli.wait_event("error", proc, timeout=10)
    assert error["plugin"] == "tcpdump" and "exited unexpectedly" in error["message"]
    assert proc.poll() is None  # the run goes on
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    assert code == 1, err
    m = inspect(cli, archive_of(out))
    assert m["trigger"]["type"] == "operator"
    rec = m["plugins"]["tcpdump"]
    assert rec["status"] == "failed"
    assert "tcpdump exited unexpectedly with status -9 (killed by SIGKILL)" in rec["error"]
    assert {"tcpdump.cmd", "tcpdump.stderr"} <= {f["path"] for f in rec["files"]}
    for name in ("marker", "dmesg", "never"):
        assert m["plugins"][name]["status"] == "ok", m["plugins"][name]
    assert m["plugins"]["dmesg"]["files"]


def test_sigkilled_runner_leaves_no_child_and_the_next_run_cleans_up(cli, leftovers, tmp_path):
    port = free_port()
    instance = unique("sct_faults")
    leftovers["ports"].append(port)
    leftovers["instances"].append(instance)
    profile = capture_profile(cli, port, instance)
    first = cli.start_capture(profile, port=port)
    started = cli.wait_event("started", first)
    cli.wait_event("armed", first)
    children = psutil.Process(first.pid).children(recursive=True)
    assert [p.pid for p in tcpdumps(port)] == [p.pid for p in children if p.name() == "tcpdump"]
    assert TraceInstance(instance).exists()
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    wait_for(lambda: not any(alive(p) for p in children), 5, "children of the killed runner to die")
    assert tcpdumps(port) == []
    assert TraceInstance(instance).exists()  # kernel state outlives the process: the next run's job
    old = started["workdir"]
    leftover = cli.out / ".scoutfs-collect-killed.partial"  # as a runner killed while packing leaves
    leftover.write_bytes(b"\0" * 4096)
    os.utime(leftover, (time.time() - 60, time.time() - 60))

    second = cli.start_capture(profile, port=port)
    cli.wait_event("armed", second, nth=2)
    second.send_signal(signal.SIGTERM)
    code, out, err = finish(second)
    assert code == 0, err
    stale_note = f"removed stale tracefs instance /sys/kernel/tracing/instances/{instance}"
    assert stale_note in err
    assert f"an earlier run (pid {first.pid}) did not finish" in err
    assert f"scoutfs-collect pack {old}" in err
    assert f"removed {leftover}" in err and not leftover.exists()
    assert not TraceInstance(instance).exists()
    assert tcpdumps(port) == []
    m = inspect(cli, archive_of(out))
    notes = m["result"]["notes"]
    assert any(stale_note in n for n in notes) and any(old in n for n in notes)
    lock = json.loads((tmp_path / "run" / "lock").read_text())
    assert lock["pid"] == second.pid and lock["finished"] is True

    packed = cli.run("pack", old)
    assert packed.returncode == 0, packed.stderr
    archive = archive_of(packed.stdout)
    assert os.path.basename(archive).startswith(os.path.basename(old))
    m = inspect(cli, archive)
    assert m["result"]["complete"] is False
    assert set(m["plugins"]) == {"marker", "dmesg", "tcpdump", "ftrace", "never"}
    assert "tcpdump.cmd" in [f["path"] for f in m["plugins"]["tcpdump"]["files"]]
    top = extract(archive, tmp_path / "x")
    assert (top / "manifest.json").is_file() and (top / "tcpdump" / "tcpdump.cmd").is_file()


# --- bad input during a run: logged, never fatal ----------------------------------------


def test_garbage_kernel_lines_and_vanishing_counters_are_not_fatal(cli, tmp_path):
    nonce = unique("garbage")
    root = tmp_path / "sysfs"
    m0, m1 = fixture.build(root, mounts=2)
    profile = cli.profile(f"""\
settings: {{compression: zstd, min_free_mb: 1}}
collectors:
  dmesg: {{}}
  scoutfs-counters: {{sysfs_root: '{root}', interval: 0.05}}
triggers:
  line: {{type: kmsg, pattern: '{nonce} reconnect timed out, fencing'}}
""")
    proc = cli.start_capture(profile)
    cli.wait_event("armed", proc)
    fd = os.open("/dev/kmsg", os.O_WRONLY)
    try:
        for raw in (b"<6>" + nonce.encode() + b" bad utf-8 \xff\xfe\xc3 and \x1b[31m escape\n",
                    b"<6>" + nonce.encode() + b" " + b"x" * 900 + b"\n",
                    b"<999>" + nonce.encode() + b" impossible level\n",
                    b"no level at all " + nonce.encode() + b" fencing\n"):
            os.write(fd, raw)
    finally:
        os.close(fd)
    fixture.set_counter(m0, "lock_lock", "not-a-number\n")
    fixture.remove_mount(m1)  # unmounted during the run
    kmsg_write(f"client {nonce} reconnect timed out, fencing")
    code, out, err = finish(proc)
    assert code == 0, err
    m = inspect(cli, archive_of(out))
    assert m["trigger"]["name"] == "line"
    assert {n: p["status"] for n, p in m["plugins"].items()} == {
        "dmesg": "ok", "scoutfs-counters": "ok", "line": "ok"}
    details = m["plugins"]["scoutfs-counters"]["details"]
    assert [v["mount"] for v in details["mounts_vanished"]] == [m1.name]
    assert any(p["counter"] == "lock_lock" and "not a number" in p["problem"]
               for p in details["read_problems"])
    top = extract(archive_of(out), tmp_path / "x")
    text = (top / "dmesg" / "dmesg.txt").read_text()
    (line,) = [ln for ln in text.splitlines() if f"{nonce} bad utf-8" in ln]
    assert line.endswith("[31m escape")
    assert f"{nonce} impossible level" in text and f"no level at all {nonce}" in text


def test_sigkill_while_packing_leaves_no_compressor_and_pack_removes_the_partial(cli, tmp_path):
    profile = cli.profile(slow_pack_profile("end: {type: timer, after: 0.1}"))
    proc = cli.start_capture(profile)
    workdir = Path(cli.wait_event("started", proc)["workdir"])
    (partial,) = wait_for(lambda: [p for p in cli.out.iterdir() if p.name.endswith(".partial")],
                          30, "packing to begin")
    # The .partial is created before the compressor is spawned: wait for the compressor itself.
    def compressor():
        found = psutil.Process(proc.pid).children(recursive=True)
        return found if [p.name() for p in found] == ["xz"] else None
    children = wait_for(compressor, 30, "the xz compressor to run")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    wait_for(lambda: not any(alive(p) for p in children), 10, "the compressor to end")
    assert not os.path.lexists(cli.out / (workdir.name + ".tar.xz"))
    assert partial.exists()  # what the killed run was writing: never under the final name
    # Later (as the next run would be), with two partials that must be left alone: one
    # still open (a packer at work), one written to a moment ago.
    a_minute_ago = time.time() - 60
    os.utime(partial, (a_minute_ago, a_minute_ago))
    busy = cli.out / ".scoutfs-collect-busy.partial"
    fresh = cli.out / ".scoutfs-collect-fresh.partial"
    fresh.write_bytes(b"x")
    with open(busy, "wb"):
        os.utime(busy, (a_minute_ago, a_minute_ago))
        packed = cli.run("pack", str(workdir))  # while the busy partial is held open
    assert packed.returncode == 0, packed.stderr
    assert f"removed {partial}" in packed.stderr
    assert not partial.exists() and busy.exists() and fresh.exists()
    top = extract(archive_of(packed.stdout), tmp_path / "x")
    assert (top / "blob" / "blob.bin").stat().st_size == 3 << 20


def test_a_run_killed_once_durable_leaves_a_work_dir_that_says_why_it_stopped(cli):
    """The fence hook lets the agent power the victim off as soon as its run is durable:
    the work dir left then must name the trigger, for ``pack`` and ``cluster gather``
    (here the run is SIGKILLed at ``durable`` while a collector's finalize still runs)."""
    profile = cli.profile("settings: {min_free_mb: 1}\ncollectors:\n  marker: {type: test-marker}\n"
                          "  sloth: {type: test-faulty, hang_in: [finalize], timeout: 60}\n"
                          "triggers:\n  end: {type: timer, after: 0.1}\n")
    proc = cli.start_capture(profile)
    workdir = Path(cli.wait_event("started", proc)["workdir"])
    cli.wait_event("durable", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    packed = cli.run("pack", str(workdir))
    assert packed.returncode == 0, packed.stderr
    m = inspect(cli, archive_of(packed.stdout))
    assert m["trigger"]["name"] == "end" and m["trigger"]["type"] == "timer", m["trigger"]
    assert m["times"]["stopped"] is not None and m["result"]["complete"] is False
