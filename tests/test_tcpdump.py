"""The tcpdump collector against real tcpdump on ``lo`` with real UDP and TCP traffic."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import psutil
import pytest

import scoutfs_collect.builtin_plugins.collectors.tcpdump as tcpdump_plugin
from scoutfs_collect.builtin_plugins.collectors.tcpdump import Tcpdump, parse_stats
from scoutfs_collect.core.registry import load
from scoutfs_collect.plugin.api import Target
from scoutfs_collect.plugin.options import check_declaration, specs
from scoutfs_collect.system.pcap import PcapError, PcapReader, summarize
from tests.support.helpers import make_plugin, wait_for

# --- fixtures: a free port, collectors that are always stopped, no tcpdump left ---------


@dataclasses.dataclass
class Endpoint:
    port: int
    tcp: socket.socket  # listening on 127.0.0.1:port
    udp: socket.socket  # bound to 127.0.0.1:port (so UDP to it is not refused)


@pytest.fixture
def ep() -> Iterator[Endpoint]:
    """A port from the ephemeral range that is free for both TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(16)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", tcp.getsockname()[1]))
        except OSError:
            tcp.close()
            udp.close()
            continue
        try:
            yield Endpoint(tcp.getsockname()[1], tcp, udp)
        finally:
            tcp.close()
            udp.close()
        return
    raise AssertionError("no port free for both TCP and UDP")


def free_udp_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def our_tcpdumps(marks: List[str]) -> List[psutil.Process]:
    """tcpdump processes that are children of this test process or carry one of our marks."""
    found = {p.pid: p for p in psutil.Process().children(recursive=True) if _name(p) == "tcpdump"}
    out = subprocess.run(["pgrep", "-a", "-x", "tcpdump"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        pid, _, cmdline = line.partition(" ")
        if any(m in cmdline for m in marks):
            try:
                found.setdefault(int(pid), psutil.Process(int(pid)))
            except psutil.NoSuchProcess:
                pass
    return list(found.values())


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return ""


class Made:
    """Builds collectors for one test (on lo, no heartbeat check unless asked) and
    cleans every one of them up afterwards, as the runner does on every exit path."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.collectors: List[Tcpdump] = []
        self.marks = [str(tmp_path)]

    def __call__(self, port: int, ip: str = "127.0.0.1", dry_run: bool = False, **settings):
        settings.setdefault("interface", "lo")
        settings.setdefault("heartbeat_timeout", 0)
        workdir = self.tmp_path / f"tcpdump{len(self.collectors)}"
        self.marks.append(f"port {port}")
        collector = make_plugin(Tcpdump, workdir, Target(ip, port), dry_run=dry_run, **settings)
        self.collectors.append(collector)
        return collector


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Made]:
    made = Made(tmp_path)
    yield made
    for c in made.collectors:
        c.cleanup()  # stops and reaps a tcpdump the test left running
    left = our_tcpdumps(made.marks)
    for p in left:  # never leave one behind, even when the test failed
        p.kill()
    assert not left, f"tcpdump left running: {[p.cmdline() for p in left]}"


# --- traffic and packet parsing -------------------------------------------------------


def send_udp(ip: str, port: int, payloads: List[bytes]) -> None:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        for data in payloads:
            s.sendto(data, (ip, port))


def ring_sizes(c: Tcpdump) -> List[Tuple[str, int]]:
    """(name, size) of each ring file now: any packet written changes it."""
    out = []
    for path in c.ring_files():
        with contextlib.suppress(FileNotFoundError):
            out.append((path.name, path.stat().st_size))
    return out


def send_tcp(e: Endpoint, chunks: List[bytes]) -> bytes:
    """Send chunks over a real TCP connection to e.port; returns what the server received."""
    with socket.create_connection(("127.0.0.1", e.port)) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server, _ = e.tcp.accept()
        with server:
            got, sent = b"", 0
            for chunk in chunks:  # one segment each: wait for it before sending the next
                c.sendall(chunk)
                sent += len(chunk)
                while len(got) < sent:
                    got += server.recv(65536)
    return got


@contextlib.contextmanager
def heartbeats(port: int) -> Iterator[None]:
    """A thread sending a UDP 'heartbeat' to 127.0.0.1:port every 10 ms while inside."""
    done = threading.Event()

    def beat() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not done.wait(0.01):  # pacing the sender, not waiting for a condition
                s.sendto(b"hb", ("127.0.0.1", port))

    sender = threading.Thread(target=beat, daemon=True)
    sender.start()
    try:
        yield
    finally:
        done.set()
        sender.join()


def parse(frame: bytes) -> Tuple[str, str, int, bytes]:
    """(proto, dst ip, dst port, payload) of an Ethernet (lo) IPv4/IPv6 UDP/TCP frame."""
    ethertype = struct.unpack("!H", frame[12:14])[0]
    ip = frame[14:]
    if ethertype == 0x0800:
        ihl, proto = (ip[0] & 15) * 4, ip[9]
        dst, l4 = socket.inet_ntop(socket.AF_INET, ip[16:20]), ip[ihl:]
    else:
        proto, dst, l4 = ip[6], socket.inet_ntop(socket.AF_INET6, ip[24:40]), ip[40:]
    dport = struct.unpack("!H", l4[2:4])[0]
    if proto == 17:
        return "udp", dst, dport, l4[8:]
    return "tcp", dst, dport, l4[(l4[12] >> 4) * 4 :]


def records(c: Tcpdump) -> List[Tuple[str, str, int, bytes]]:
    """Every captured packet, parsed, in ring order (oldest file first)."""
    out = []
    for name in c.ctx.details["files_in_order"]:
        out += [parse(r.data) for r in PcapReader(c.ctx.workdir / name, with_data=True)]
    return out


def tcpdump_r_count(path: Path) -> int:
    done = subprocess.run(["tcpdump", "-n", "-r", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return len(done.stdout.splitlines())


# --- capture ------------------------------------------------------------------------


def test_captures_every_udp_and_tcp_packet_sent_before_stop(make, ep):
    c = make(ep.port)
    assert c.preflight() == []
    t0 = time.time()
    c.start()  # returns once tcpdump is listening: the very next packet is captured
    udp = [b"udp-%03d" % i for i in range(50)]
    send_udp("127.0.0.1", ep.port, udp)
    chunks = [b"tcp-%03d|" % i * 20 for i in range(20)]
    assert send_tcp(ep, chunks) == b"".join(chunks)
    send_udp("127.0.0.1", ep.port, [b"last"])  # sent immediately before stop
    c.stop()
    t1 = time.time()
    c.finalize()

    d = c.ctx.details
    got = records(c)
    assert [p for proto, _, _, p in got if proto == "udp"] == udp + [b"last"]
    tcp_to_server = b"".join(p for proto, _, port, p in got if proto == "tcp" and port == ep.port)
    assert tcp_to_server == b"".join(chunks)
    assert d["files_in_order"] == ["tcpdump.pcap0"]
    assert tcpdump_r_count(c.ctx.workdir / "tcpdump.pcap0") == len(got) == d["packets_in_files"]
    assert d["packets_captured"] == len(got) and d["packets_dropped_by_kernel"] == 0
    assert d["exit_status"] == 0
    assert t0 <= c.ctx.window["first"] <= c.ctx.window["last"] <= t1
    assert c.bytes_written() == (c.ctx.workdir / "tcpdump.pcap0").stat().st_size > 24
    cmd = (c.ctx.workdir / "tcpdump.cmd").read_text()
    assert f"'host 127.0.0.1 and (tcp port {ep.port} or udp port {ep.port})'" in cmd
    assert "--immediate-mode" in cmd and "-C 50 -W 2 -Z root" in cmd
    assert "listening on lo" in (c.ctx.workdir / "tcpdump.stderr").read_text()


def test_burst_sent_right_before_stop_is_kept(make, ep):
    """tcpdump drops what is still queued in the kernel when SIGINT arrives; stop() must
    let it read the queue first (without that, a few runs in ten lost packets here)."""
    for run in range(8):
        c = make(ep.port)
        c.start()
        burst = [b"%d-%03d" % (run, i) for i in range(100)]
        send_udp("127.0.0.1", ep.port, burst)
        c.stop()
        c.finalize()
        assert [p for _, _, _, p in records(c)] == burst


def test_stop_leaves_every_packet_in_the_file_and_finalize_collects_the_exit(make, ep):
    """stop() is the trigger instant: it signals tcpdump and returns. The packets sent
    before it are in the pcap already then (the runner fsyncs right after the stop, before
    finalize); tcpdump's exit and counts are collected by finalize."""
    c = make(ep.port)
    c.start()
    sent = [b"before-%03d" % i for i in range(60)]
    send_udp("127.0.0.1", ep.port, sent)
    c.stop()
    on_disk = [parse(r.data)[3] for r in PcapReader(c.ctx.workdir / "tcpdump.pcap0",
                                                     with_data=True)]
    assert on_disk == sent
    c.finalize()
    d = c.ctx.details
    assert d["exit_status"] == 0 and d["packets_captured"] == len(sent)
    assert c.pid is not None and not psutil.pid_exists(c.pid)


def test_filter_keeps_only_target_ip_and_port(make, ep):
    """Target 127.0.0.2:P. The old filter `host IP and tcp port P or udp port P` would also
    have captured UDP to 127.0.0.1:P; the fixed one must not, nor other ports of the IP."""
    other = free_udp_port()
    c = make(ep.port, ip="127.0.0.2")
    assert c.preflight() == []
    c.start()
    send_udp("127.0.0.1", ep.port, [b"wrong-host"] * 5)
    send_udp("127.0.0.2", other, [b"wrong-port"] * 5)
    send_udp("127.0.0.2", ep.port, [b"right-%d" % i for i in range(7)])
    c.stop()
    c.finalize()
    got = records(c)
    assert [(dst, port, p) for _, dst, port, p in got] == [
        ("127.0.0.2", ep.port, b"right-%d" % i) for i in range(7)
    ]
    assert c.ctx.details["filter"] == (
        f"host 127.0.0.2 and (tcp port {ep.port} or udp port {ep.port})"
    )


def test_ipv6_target_and_extra_filter(make):
    port = free_udp_port("::1")
    c = make(port, ip="::1", extra_filter="greater 100")
    assert c.preflight() == []
    c.start()
    send_udp("::1", port, [b"x", b"y" * 100, b"z" * 200])  # the 1-byte one is a 63-byte frame
    c.stop()
    c.finalize()
    assert [(dst, p) for _, dst, _, p in records(c)] == [("::1", b"y" * 100), ("::1", b"z" * 200)]
    assert c.ctx.details["filter"].endswith(" and (greater 100)")


def test_default_interface_any_captures_each_packet_once(make, ep):
    c = make(ep.port, interface="any", heartbeat_timeout=2)
    with heartbeats(ep.port):
        assert c.preflight() == []
    c.start()
    send_udp("127.0.0.1", ep.port, [b"any-%02d" % i for i in range(30)])
    c.stop()
    c.finalize()
    reader = PcapReader(c.ctx.workdir / "tcpdump.pcap0", with_data=True)
    payloads = [r.data[-6:] for r in reader]
    assert reader.linktype == 276  # LINUX_SLL2, the cooked header of 'any'
    assert [p for p in payloads if b"any-" in p] == [b"any-%02d" % i for i in range(30)]
    assert c.ctx.details["packets_in_files"] == c.ctx.details["packets_captured"] == 30


def test_ring_rotation_keeps_two_files_oldest_first(make, ep):
    c = make(ep.port, file_size_mb=1, file_count=2)
    c.start()
    n = 45  # 60 kB each, 17 per 1 MB file: files 0, 1, then 0 again (newest) -> 2.7 MB
    for i in range(n):
        # One at a time, each written before the next (tcpdump -U writes every packet):
        # a burst would test the machine's load (a loaded CI host dropped 111), not rotation.
        before = ring_sizes(c)
        send_udp("127.0.0.1", ep.port, [struct.pack("!I", i) * 15000])
        wait_for(lambda before=before: ring_sizes(c) != before, 10, f"packet {i} in the ring")
    c.stop()
    c.finalize()
    d = c.ctx.details
    assert sorted(p.name for p in c.ring_files()) == ["tcpdump.pcap0", "tcpdump.pcap1"]
    assert d["files_in_order"] == ["tcpdump.pcap1", "tcpdump.pcap0"]  # not name order
    seqs = [struct.unpack("!I", p[:4])[0] for _, _, _, p in records(c)]
    assert seqs == list(range(n - len(seqs), n)) and 17 < len(seqs) < n  # oldest overwritten
    files = d["files"]
    assert files[0]["last"] <= files[1]["first"]
    assert c.ctx.window == {"first": files[0]["first"], "last": files[1]["last"]}
    assert d["packets_dropped_by_kernel"] == 0
    assert c.bytes_written() == sum(f["bytes"] for f in files) > 1_600_000  # 1 MB + 11 packets
    assert c.disk_estimate() == 2_000_000


# --- preflight ----------------------------------------------------------------------


def test_heartbeat_missing_is_a_problem_with_the_fix(make, ep):
    c = make(ep.port, heartbeat_timeout=0.5, dry_run=True)
    began = time.monotonic()
    problems = c.preflight()
    assert time.monotonic() - began < 3
    assert len(problems) == 1 and problems[0].fatal
    assert problems[0].message.startswith(f"no heartbeat on 127.0.0.1:{ep.port}")
    assert "server starting at" in problems[0].fix and "heartbeat_timeout: 0" in problems[0].fix
    assert list(c.ctx.workdir.iterdir()) == []  # dry run: nothing written


def test_heartbeat_passes_when_udp_heartbeats_flow(make, ep):
    c = make(ep.port, heartbeat_timeout=5, dry_run=True)
    with heartbeats(ep.port):
        began = time.monotonic()
        assert c.preflight() == []
        assert time.monotonic() - began < 3


def test_unbalanced_extra_filter_is_a_problem(make, ep):
    problems = make(ep.port, extra_filter=") or (udp").preflight()
    assert len(problems) == 1 and "unbalanced parentheses" in problems[0].message
    assert "extra_filter" in problems[0].fix


@pytest.mark.parametrize("extra", ["port nosuchservice", "tcp port"], ids=["unknown-port", "syntax"])
def test_extra_filter_tcpdump_refuses_is_a_problem_quoting_it(make, ep, extra):
    """The problem quotes what tcpdump itself says of the filter, in its own words (they
    differ between versions: compared with what this tcpdump prints, not a fixed text).
    A port name, not a host name: resolving a host would ask the DNS server."""
    c = make(ep.port, extra_filter=extra)
    problems = c.preflight()
    said = subprocess.run(["tcpdump", "-d", "-i", "lo", c.capture_filter()], capture_output=True,
                          text=True, timeout=30)
    assert said.returncode != 0 and said.stderr.strip()
    last = said.stderr.strip().splitlines()[-1].strip()
    assert len(problems) == 1, problems
    assert extra in problems[0].message and problems[0].message.endswith(f": {last}")
    assert "extra_filter" in problems[0].fix


@pytest.mark.parametrize(
    "iface, words",
    [("eth0; reboot", "not a valid interface name"), ("lo/x", "not a valid interface name"),
     ("a b", "not a valid interface name"), ("-w", "not a valid interface name"),
     ("nosuchif9", "does not exist")],
)
def test_bad_interface_is_a_problem(make, ep, iface, words):
    problems = make(ep.port, interface=iface).preflight()
    assert [words in p.message for p in problems] == [True]
    assert "ip link" in problems[0].fix


def test_bad_numbers_and_missing_tcpdump_are_problems(make, ep, monkeypatch, tmp_path):
    problems = make(ep.port, file_count=0, file_size_mb=0, snaplen=-1).preflight()
    assert {p.message.split()[1] for p in problems} == {"file_count", "file_size_mb", "snaplen"}
    monkeypatch.setattr(tcpdump_plugin, "_SEARCH_PATH", str(tmp_path))
    problems = make(ep.port).preflight()
    assert [p.message for p in problems] == ["tcpdump is not installed"]
    assert "dnf install tcpdump" in problems[0].fix and "apt-get install tcpdump" in problems[0].fix


# --- failures and safety --------------------------------------------------------------


def test_tcpdump_killed_mid_run_calls_ctx_fail(make, ep):
    c = make(ep.port)
    c.start()
    os.kill(c.pid, signal.SIGKILL)
    wait_for(lambda: c.ctx.failures, timeout=5, what="ctx.fail")
    # the failure quotes tcpdump's last words, whatever this version's wording ("capture
    # size 262144 bytes" in 4.9, "snapshot length 262144 bytes" in 4.99)
    said = (c.ctx.workdir / "tcpdump.stderr").read_text().strip().splitlines()[-1]
    assert "listening on lo" in said  # 4.99 says "tcpdump: listening on lo", 4.9 "listening on lo"
    assert c.ctx.failures == [f"tcpdump exited unexpectedly with status -9 (killed by SIGKILL): {said}"]
    c.stop()
    c.finalize()  # still works, and reports what there is
    assert c.ctx.details["exit_status"] == -9 and c.ctx.details["files_in_order"] == ["tcpdump.pcap0"]


def test_start_failure_raises_and_leaves_nothing(make, ep):
    c = make(ep.port, interface="nosuchif9")
    with pytest.raises(RuntimeError) as raised:
        c.start()
    # it quotes tcpdump's last line, in this libpcap's words ("No such device exists" and
    # the ioctl's error: one line in 1.10, two in 1.9)
    said = (c.ctx.workdir / "tcpdump.stderr").read_text().strip().splitlines()[-1].strip()
    assert str(raised.value).startswith("tcpdump exited at start with status 1: ")
    assert str(raised.value).endswith(said) and said
    assert c.ctx.failures == []  # start reported it, not ctx.fail
    c.stop()
    c.finalize()


def test_stop_and_finalize_without_start(make, ep):
    c = make(ep.port)
    c.stop()
    c.finalize()
    assert c.ctx.details["files_in_order"] == [] and c.ctx.window is None
    assert c.bytes_written() == 0 and c.pid is None


def test_finalize_stops_a_running_tcpdump(make, ep):
    c = make(ep.port, snaplen=96)
    c.start()
    pid = c.pid
    c.finalize()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "-s 96" in (c.ctx.workdir / "tcpdump.cmd").read_text()


def test_registered_and_documented():
    found = load().get("tcpdump", "collector")
    assert found.cls is Tcpdump and check_declaration(Tcpdump.Options) is None
    assert all(o.doc for o in specs(Tcpdump.Options))
    for words in ("CHANGES", "Overhead", "Requirements"):
        assert words.lower() in found.doc.lower()


# --- the pcap reader ------------------------------------------------------------------


def pcap_bytes(order: str, nano: bool, recs: List[Tuple[int, int, bytes]]) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    for sec, frac, data in recs:
        out += struct.pack(order + "IIII", sec, frac, len(data), len(data) + 10) + data
    return out


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_reader_byte_orders_and_nanoseconds(tmp_path, order, nano):
    frac = 500_000_000 if nano else 500_000
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap_bytes(order, nano, [(100, frac, b"ab"), (102, 0, b"cde")]))
    reader = PcapReader(path, with_data=True)
    assert [(r.time, r.caplen, r.origlen, r.data) for r in reader] == [
        (100.5, 2, 12, b"ab"), (102.0, 3, 13, b"cde")
    ]
    assert not reader.truncated and reader.linktype == 1


@pytest.mark.parametrize("cut", [1, 8, 16, 18])
def test_reader_tolerates_a_truncated_last_record(tmp_path, cut):
    whole = pcap_bytes("<", False, [(1, 0, b"a" * 3), (2, 0, b"b" * 3)])
    path = tmp_path / "x.pcap"
    path.write_bytes(whole[: len(whole) - 19 + cut])  # the last record is 19 bytes
    s = summarize(path)
    assert (s.packets, s.first, s.last, s.truncated, s.error) == (1, 1.0, 1.0, True, "")


def test_reader_refuses_what_is_not_pcap(tmp_path):
    path = tmp_path / "x.pcap"
    path.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\0" * 40)  # pcapng
    with pytest.raises(PcapError):
        list(PcapReader(path))
    assert "not a pcap file" in summarize(path).error


@pytest.mark.parametrize("stderr, counts", [
    # tcpdump 4.9 (EL8): "capture size"; no count of interface drops
    ("tcpdump: verbose output suppressed, use -v or -vv for full protocol decode\n"
     "listening on lo, link-type EN10MB (Ethernet), capture size 262144 bytes\n"
     "3 packets captured\n4 packets received by filter\n1 packet dropped by kernel\n",
     {"captured": 3, "received_by_filter": 4, "dropped_by_kernel": 1}),
    # tcpdump 4.99: "snapshot length", and interface drops where the driver counts them
    ("tcpdump: verbose output suppressed, use -v[v]... for full protocol decode\n"
     "tcpdump: listening on lo, link-type EN10MB (Ethernet), snapshot length 262144 bytes\n"
     "1 packet captured\n12 packets received by filter\n0 packets dropped by kernel\n"
     "5 packets dropped by interface\n",
     {"captured": 1, "received_by_filter": 12, "dropped_by_kernel": 0, "dropped_by_interface": 5}),
], ids=["tcpdump-4.9", "tcpdump-4.99"])
def test_parse_stats_of_either_version(stderr, counts):
    assert parse_stats(stderr) == counts
