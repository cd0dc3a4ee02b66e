"""The sysinfo and dmesg collectors, on the real host and the real /dev/kmsg."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import scoutfs_collect.builtin_plugins.collectors.dmesg as dmesg_plugin
from scoutfs_collect import Target
from scoutfs_collect.builtin_plugins.collectors.dmesg import DmesgCollector
from scoutfs_collect.builtin_plugins.collectors.sysinfo import Sysinfo, run_bounded
from scoutfs_collect.core.registry import load
from tests.support.helpers import kmsg_write, make_plugin, unique, wait_for


def make(cls, tmp_path: Path, port: int = 5000, **values):
    return make_plugin(cls, tmp_path / cls.type_name, target=Target("127.0.0.1", port), **values)


def test_registered_as_builtins():
    registry = load()
    assert registry.get("dmesg", "collector").cls is DmesgCollector
    assert registry.get("sysinfo", "collector").cls is Sysinfo


# --- dmesg -------------------------------------------------------------------------------

def jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_dmesg_records_ring_run_and_trigger_line(tmp_path, collectors, monkeypatch):
    # No journal where it looks, so the test holds on hosts that run journald too.
    monkeypatch.setattr(dmesg_plugin, "JOURNAL_DIRS", (str(tmp_path / "no-journal"),) * 3)
    nonce = unique("dmesgtest")
    kmsg_write(f"{nonce} before start")
    c = make(DmesgCollector, tmp_path)
    assert c.preflight() == []
    c.start()
    collectors.append(c)
    kmsg_write(f"{nonce} during the run", level=4)
    wait_for(lambda: nonce.encode() in (c.ctx.workdir / "kmsg-follow.raw").read_bytes(), 2,
             "line followed to disk before stop")
    kmsg_write(f"client 1.2.3.4:5 {nonce} reconnect timed out, fencing")
    c.stop()  # at once: the trigger line must still be drained
    c.finalize()

    rows = [r for r in jsonl(c.ctx.workdir / "kmsg.jsonl") if nonce in r["text"]]
    assert [(r["part"], r["level"], r["facility"], r["text"]) for r in rows] == [
        ("ring", 6, 1, f"{nonce} before start"),
        ("follow", 4, 1, f"{nonce} during the run"),
        ("follow", 6, 1, f"client 1.2.3.4:5 {nonce} reconnect timed out, fencing")]
    assert abs(rows[-1]["epoch"] - time.time()) < 5
    text = (c.ctx.workdir / "dmesg.txt").read_text()
    assert f"<user.warning> {nonce} during the run" in text
    assert (text.index(f"{nonce} before start") < text.index("-- following")
            < text.index(f"{nonce} reconnect timed out"))
    d = c.ctx.details
    assert d["lost"] == 0 and d["gaps"] == [] and d["followed"] >= 2 and d["ring_at_start"] >= 1
    assert d["journal"] == {"saved": False, "note": "no systemd journal on this host"}
    assert c.ctx.window["first"] <= rows[0]["epoch"] and c.ctx.window["last"] >= rows[-1]["epoch"]


def test_dmesg_txt_shows_terminal_escapes_instead_of_sending_them(tmp_path, collectors):
    nonce = unique("escape")
    c = make(DmesgCollector, tmp_path)
    c.start()
    collectors.append(c)
    kmsg_write(f"{nonce} \x1b[2J\x1b]0;owned\x07 red")
    wait_for(lambda: nonce.encode() in (c.ctx.workdir / "kmsg-follow.raw").read_bytes(), 2,
             "line followed")
    c.stop()
    c.finalize()
    text = (c.ctx.workdir / "dmesg.txt").read_text()
    line = next(x for x in text.splitlines() if nonce in x)
    assert "\x1b" not in line and "\x07" not in line
    assert f"{nonce} \\x1b[2J\\x1b]0;owned\\x07 red" in line
    row = next(r for r in jsonl(c.ctx.workdir / "kmsg.jsonl") if nonce in r["text"])
    assert row["text"] == f"{nonce} \x1b[2J\x1b]0;owned\x07 red"  # exact text kept in JSON


def test_dmesg_size_cap_drops_oldest_and_marks_the_gap(tmp_path, collectors, monkeypatch):
    monkeypatch.setattr(dmesg_plugin, "MB", 1024)  # max_mb=1 -> 1 KiB: rotates every ~512 B
    nonce = unique("dmesgcap")
    c = make(DmesgCollector, tmp_path, max_mb=1)
    c.start()
    collectors.append(c)
    for n in range(15):
        kmsg_write(f"{nonce} line {n:02d} " + "x" * 100)
        wait_for(lambda n=n: f"line {n:02d}".encode() in _follow_bytes(c.ctx.workdir), 2, "line")
    c.stop()
    with open(c.ctx.workdir / "kmsg-follow.raw", "ab") as f:
        f.write(b"torn record without prefix\n")  # garbage is skipped, not fatal
    c.finalize()
    texts = [r["text"] for r in jsonl(c.ctx.workdir / "kmsg.jsonl") if nonce in r["text"]]
    assert texts[-1].startswith(f"{nonce} line 14") and not texts[0].startswith(f"{nonce} line 00")
    assert c.ctx.details["lost"] > 0
    assert "dropped on disk: over max_mb=1" in (c.ctx.workdir / "dmesg.txt").read_text()


def _follow_bytes(workdir: Path) -> bytes:
    return b"".join((workdir / n).read_bytes() for n in ("kmsg-follow.old.raw", "kmsg-follow.raw")
                    if (workdir / n).exists())


def test_dmesg_preflight_names_the_device(tmp_path):
    (problem,) = make(DmesgCollector, tmp_path, device=str(tmp_path / "nokmsg")).preflight()
    assert "cannot read" in problem.message and "nokmsg" in problem.message


# --- sysinfo -----------------------------------------------------------------------------

@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_sysinfo_snapshots(tmp_path, listener):
    c = make(Sysinfo, tmp_path, port=listener)
    c.start()
    c.stop()
    w = c.ctx.workdir
    assert not (w / "sysinfo-stop.json").exists()  # stop() only notes the instant: the snapshot is finalize's
    c.finalize()
    for label in ("start", "stop"):
        snap = json.loads((w / f"sysinfo-{label}.json").read_text())
        assert snap["label"] == label
        for key in ("host", "cpu", "memory", "disks", "network", "connections", "modules",
                    "processes"):
            assert "error" not in snap[key], (key, snap[key])
        assert snap["connections"]["port"] == listener
        assert {"proto": "tcp", "laddr": f"127.0.0.1:{listener}", "raddr": "",
                "status": "LISTEN", "pid": os.getpid()}.items() <= snap["connections"]["list"][0].items()
        assert os.getpid() in [p["pid"] for p in snap["processes"]["all"]]
        assert snap["host"]["uname"]["release"] == os.uname().release
        assert any(p["mountpoint"] == "/" for p in snap["disks"]["partitions"])
        assert "lo" in snap["network"]
        text = (w / f"sysinfo-{label}.txt").read_text()
        assert f"tcp 127.0.0.1:{listener} -> * LISTEN pid {os.getpid()}" in text
    stop = json.loads((w / "sysinfo-stop.json").read_text())
    assert stop["taken_at"] >= stop["stop_requested_at"]
    assert len(stop["cpu"]["busy_pct_since_start"]) == os.cpu_count()
    assert (w / "proc-cmdline.txt").read_bytes() == Path("/proc/cmdline").read_bytes()
    assert (w / "proc-mounts.txt").exists() and (w / "os-release.txt").exists()


def test_run_bounded_gives_up_on_a_hung_section():
    release = threading.Event()
    t0 = time.monotonic()
    out = run_bounded([("fast", lambda: 1), ("hung", release.wait), ("after", lambda: 2)], 0.2)
    release.set()
    assert time.monotonic() - t0 < 1
    assert out["fast"] == 1
    assert "not finished after 0.2 s" in out["hung"]["error"]
    assert "error" in out["after"]
    broken = run_bounded([("bad", lambda: 1 / 0), ("ok", lambda: 3)], 1)
    assert broken["bad"] == {"error": "ZeroDivisionError: division by zero"} and broken["ok"] == 3


def test_sysinfo_does_not_archive_passwords_from_command_lines(tmp_path):
    secret = unique("hunter2")
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()",
                              "--password", secret, f"TOKEN={secret}"], stdin=subprocess.PIPE)
    try:
        c = make(Sysinfo, tmp_path)
        c.start()
        c.stop()
        c.finalize()
    finally:
        child.communicate(b"", timeout=10)
    snap = json.loads((c.ctx.workdir / "sysinfo-start.json").read_text())
    row = next(r for r in snap["processes"]["all"] if r["pid"] == child.pid)
    assert row["cmd"].endswith("--password *** TOKEN=***")
    for path in c.ctx.workdir.iterdir():
        assert secret not in path.read_text(errors="replace"), path.name


def test_sysinfo_never_statfs_a_scoutfs_mount(tmp_path, monkeypatch):
    """Documented fake (no scoutfs module here): statfs of a scoutfs mount asks its server
    and, on the node being fenced, waits uninterruptibly: in a target guest such a thread
    kept a finished run from exiting. psutil lists the host's partitions plus one scoutfs
    mount, and every statfs is recorded: the scoutfs one is never asked."""
    from scoutfs_collect.builtin_plugins.collectors import sysinfo

    real = sysinfo.psutil.disk_partitions(all=False)
    fake = type(real[0])(device="/dev/loop1", mountpoint=str(tmp_path), fstype="scoutfs",
                         opts="rw", **{f: "" for f in type(real[0])._fields[4:]})
    asked = []
    real_usage = sysinfo.psutil.disk_usage
    monkeypatch.setattr(sysinfo.psutil, "disk_partitions", lambda all=False: [*real, fake])
    monkeypatch.setattr(sysinfo.psutil, "disk_usage", lambda m: asked.append(m) or real_usage(m))
    c = make(Sysinfo, tmp_path, port=1)
    c.start()
    parts = json.loads((c.ctx.workdir / "sysinfo-start.json").read_text())["disks"]["partitions"]
    mine = [p for p in parts if p["fstype"] == "scoutfs"]
    assert str(tmp_path) not in asked and "/" in asked
    assert mine and mine[0]["usage"]["error"].startswith("not read: statfs of a scoutfs mount")
    c.stop()
    c.finalize()
