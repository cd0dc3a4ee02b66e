"""The whole product through the CLI on the real kernel: ftrace, tcpdump, kmsg, counters.

ftrace records real sched events and trace_marker prints in a private instance that
freezes in the kernel on the trigger line; tcpdump captures real UDP and TCP on lo; the
trigger is a real kernel log line; the scoutfs sysfs tree is the fixture (the module
cannot load here).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import psutil

from scoutfs_collect.demo import fixture
from scoutfs_collect.system.pcap import PcapReader
from tests.support.cli import finish
from tests.support.helpers import extract, kmsg_write, unique

TRACEFS = Path("/sys/kernel/tracing")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def marker(instance: str, text: str) -> None:
    with open(TRACEFS / "instances" / instance / "trace_marker", "w") as f:
        f.write(text)


def tcpdump_alive(port: int) -> list:
    return [p for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "tcpdump" and f"port {port}" in " ".join(p.info["cmdline"] or [])]


def test_capture_end_to_end(cli, tmp_path):
    nonce = unique("fence")
    instance = unique("sc_e2e")
    port = free_port()
    sysfs = tmp_path / "sysfs"
    (mount,) = fixture.build(sysfs, mounts=1)
    tracing_on_before = (TRACEFS / "tracing_on").read_text()
    profile = cli.profile(f"""\
settings: {{compression: zstd}}
collectors:
  dmesg: {{}}
  scoutfs-counters: {{sysfs_root: {sysfs}, interval: 0.2}}
  ftrace:
    instance: {instance}
    events: ["sched:sched_switch"]
    buffer_size_kb: 512
    freeze_on: ["*{nonce} reconnect timed out, fencing*"]
  tcpdump: {{interface: lo, heartbeat_timeout: 0, file_size_mb: 1, file_count: 2}}
triggers:
  fencing: {{type: kmsg, pattern: '{nonce} reconnect timed out, fencing'}}
  fence-request: {{type: scoutfs-fence, sysfs_root: {sysfs}}}
""")
    proc = cli.start("--profile", str(profile), "--output-dir", str(cli.out),
                     "--events-file", str(cli.events), "127.0.0.1", str(port))
    cli.wait_event("armed", proc)
    assert (TRACEFS / "instances" / instance).is_dir()

    for i in range(5):
        marker(instance, f"{nonce} before-{i}")
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for i in range(20):
            udp.sendto(f"{nonce} udp-{i}".encode(), ("127.0.0.1", port))
    with socket.create_connection(("127.0.0.1", port)) as tcp:
        conn, _ = listener.accept()
        tcp.sendall(f"{nonce} tcp-payload".encode())
        assert conn.recv(100)
        conn.close()
    listener.close()
    fixture.bump(mount, "lock_lock", 7)
    fixture.bump(mount, "net_send_messages", 3)

    kmsg_write(f"scoutfs f.000001.r.000002: client 127.0.0.1:{port} {nonce} reconnect timed out, "
               "fencing")
    try:  # the instance froze in the kernel: these are not recorded (or it is already gone)
        for i in range(5):
            marker(instance, f"{nonce} after-{i}")
    except OSError:
        pass
    code, out, err = finish(proc)
    assert code == 0, err
    archive = out.strip().splitlines()[-1].split(": ", 1)[1]
    top = extract(archive, tmp_path / "x")
    m = json.loads((top / "manifest.json").read_text())
    assert m["trigger"]["name"] == "fencing"
    assert all(p["status"] == "ok" for p in m["plugins"].values()), m["plugins"]

    # ftrace: the trigger line is the last console record, nothing after the trigger.
    ft = m["plugins"]["ftrace"]["details"]
    assert ft["freeze_mode"] == "in-kernel"
    assert ft["frozen_by"] == "in-kernel trigger"
    text = (top / "ftrace" / "trace.txt").read_text()
    lines = text.splitlines()
    console = [i for i, line in enumerate(lines) if " console: " in line]
    assert console and nonce in lines[console[-1]] and "reconnect timed out" in lines[console[-1]]
    for i in range(5):
        assert f"{nonce} before-{i}" in text
        assert f"{nonce} after-{i}" not in text
    assert "sched_switch:" in text
    after_trigger = [line for line in lines[console[-1] + 1:] if line and not line.startswith("#")]
    assert after_trigger == []
    assert (top / "ftrace" / "trace.dat").is_file()
    report = subprocess.run(["trace-cmd", "report", str(top / "ftrace" / "trace.dat")],
                            capture_output=True, text=True, check=True).stdout
    assert f"{nonce} before-4" in report
    assert not (TRACEFS / "instances" / instance).exists()
    assert (TRACEFS / "tracing_on").read_text() == tracing_on_before

    # tcpdump: every packet sent before the trigger, the TCP payload, and no tcpdump left.
    payloads = b"".join(r.data for f in sorted((top / "tcpdump").glob("tcpdump.pcap*"))
                        for r in PcapReader(f, with_data=True))
    for i in range(20):
        assert f"{nonce} udp-{i}".encode() in payloads
    assert f"{nonce} tcp-payload".encode() in payloads
    assert tcpdump_alive(port) == []

    # counters: the delta table shows exactly what moved.
    delta = (top / "scoutfs-counters" / "counters-delta.txt").read_text()
    assert re.search(r"lock_lock\s+0\s+7\s+\+7", delta), delta
    assert re.search(r"net_send_messages\s+0\s+3\s+\+3", delta), delta
    assert "2 of 203 counters changed" in delta

    # dmesg: the trigger line is there too; windows end at or before the trigger.
    assert f"{nonce} reconnect timed out" in (top / "dmesg" / "dmesg.txt").read_text()
    for name in ("ftrace", "tcpdump", "dmesg"):
        window = m["plugins"][name]["window"]
        assert window["first"] <= m["trigger"]["time"] + 0.05, name


def test_fence_request_ends_the_run(cli, tmp_path):
    sysfs = tmp_path / "sysfs"
    (mount,) = fixture.build(sysfs, mounts=1)
    fixture.add_fence_request(mount, "00000000000000aa", "10.9.9.9", "client_recovery")
    profile = cli.profile(f"""\
collectors:
  scoutfs-counters: {{sysfs_root: {sysfs}, interval: 0}}
triggers:
  fence-request: {{type: scoutfs-fence, sysfs_root: {sysfs}, interval: 0.05}}
""")
    proc = cli.start("--profile", str(profile), "--output-dir", str(cli.out),
                     "--events-file", str(cli.events), "127.0.0.1", "7010")
    cli.wait_event("armed", proc)
    fixture.add_fence_request(mount, "0123456789abcdef", "10.0.0.2", "client_reconnect")
    code, out, err = finish(proc)
    assert code == 0, err
    triggered = cli.wait_event("triggered")
    assert triggered["type"] == "scoutfs-fence"
    assert "0123456789abcdef" in triggered["reason"] and "10.0.0.2" in triggered["reason"]
    assert "00000000000000aa" not in triggered["reason"]  # present before arm: not a trigger
