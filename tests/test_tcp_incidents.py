"""The tcp analysis on real incidents between two namespace test hosts, checked against
tshark's TCP expert analysis of the same pcaps.

A scoutfs-like conversation (tests/support/cluster_peer.py: the cluster port, scoutfs's
socket options and a 10 Hz UDP heartbeat on the same port) runs between host ``a``
(client) and ``b`` (server) while tcpdump records on both (``a`` on eth0: Ethernet;
``b`` on any: Linux cooked). The timeouts are scaled down: TCP_USER_TIMEOUT 6000 ms, so
keepidle 3 s (scoutfs: 24000 ms, 21 s), keepintvl 1 s as in scoutfs.
"""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from scoutfs_collect.analysis import tcp
from scoutfs_collect.system.pcap import PcapReader
from tests.support import netpair as np
from tests.support import tshark
from tests.support.conversation import PORT, Conversation
from tests.support.helpers import wait_for
from tests.support.netpair import NetHost, NetPair, netpair  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux"),
              pytest.mark.once]  # the kernel's TCP and tshark are the subject
DATA = Path(__file__).parent / "data"


def analyze(pcap: Path, until: Optional[float] = None) -> Dict[str, tcp.Direction]:
    conns = tcp.analyze_pcaps([pcap], port=PORT, until=until).connections()
    assert len(conns) == 1, conns
    return {d.src: d for d in (conns[0].a, conns[0].b)}


def assert_agrees(pcap: Path) -> Dict[str, tcp.Direction]:
    """Our counts per direction equal tshark's, for every flag tshark has."""
    ours = analyze(pcap)
    theirs = tshark.expert(pcap, PORT)
    for field, by_sender in theirs.items():
        assert set(by_sender) <= set(ours), (field, by_sender)
        for sender, direction in ours.items():
            assert getattr(direction, field) == by_sender.get(sender, 0), (pcap.name, field, sender)
    return ours


def endpoint(host: NetHost, directions: Dict[str, tcp.Direction], server: bool) -> str:
    (name,) = [s for s in directions if s.startswith(f"{host.address}:") and s.endswith(f":{PORT}") == server]
    return name


@pytest.fixture
def talk(netpair, tmp_path) -> Iterator:  # noqa: F811
    made: List[Conversation] = []

    def make(**kwargs) -> Conversation:
        made.append(Conversation(netpair(), tmp_path, **kwargs))
        return made[-1]

    yield make


def test_partition_retransmissions_unanswered_and_silence(talk):
    conv = talk()
    net = conv.net
    cut_at = time.time()
    net.cut(net.a)
    wait_for(lambda: conv.retransmitted(net.a) >= 4, 20, "a's retransmissions")
    until = conv.stop()
    a_pcap, b_pcap = assert_agrees(conv.pcaps["a"]), assert_agrees(conv.pcaps["b"])
    client = endpoint(net.a, a_pcap, server=False)
    server = endpoint(net.b, a_pcap, server=True)
    assert a_pcap[client].retransmissions >= 4  # unanswered, in the victim's own capture
    assert a_pcap[server].retransmissions == 0
    assert b_pcap[client].retransmissions == 0 and b_pcap[server].retransmissions == 0
    # the server heard nothing from the client since the cut: its silence reaches the end
    silent = analyze(conv.pcaps["b"], until)[client]
    assert silent.silence_from is not None and silent.silence_from <= cut_at + 0.5
    assert silent.longest_silence >= until - cut_at - 0.5
    assert "sfc_cut" in net.tables()  # the cut was the switch's table, still in place


def test_stopped_reader_zero_window(talk):
    conv = talk(size=16384, interval=0.01)
    net = conv.net
    conv.server.send_signal(signal.SIGSTOP)
    wait_for(lambda: sum(tshark.count(conv.pcaps["b"], "tcp.analysis.zero_window").values()) >= 3,
             30, "zero-window segments from the stopped reader")
    conv.stop()
    conv.server.send_signal(signal.SIGCONT)
    a_pcap, b_pcap = assert_agrees(conv.pcaps["a"]), assert_agrees(conv.pcaps["b"])
    server = endpoint(net.b, b_pcap, server=True)
    client = endpoint(net.a, b_pcap, server=False)
    assert b_pcap[server].zero_windows >= 3 and a_pcap[server].zero_windows >= 3
    assert b_pcap[client].zero_windows == 0
    # Linux probes a zero window with keep-alive-like segments (seq = snd_una - 1, no
    # data), so Wireshark calls them keep-alives; the stopped reader's kernel answers them
    # (not every one: its answers to old segments are rate limited, tcp_invalid_ratelimit)
    probes = a_pcap[client]
    assert probes.keepalives >= 1 and probes.unanswered_keepalives < probes.keepalives


def test_lossy_port_duplicate_acks_and_retransmissions(talk):
    conv = talk(size=16384, interval=0.01)
    net = conv.net
    net.lose(net.a, 5)  # 5 % of what a sends is lost on the way

    def seen(field: str, sender: str) -> int:
        """tshark's count of ``field`` sent by ``sender`` (ip:port) in a's capture so far."""
        return tshark.count(conv.pcaps["a"], tshark.FILTERS[field])[sender]

    def client_end() -> str:
        counts = tshark.count(conv.pcaps["a"], f"tcp.dstport == {PORT}")
        return next((s for s in counts if s.startswith(f"{net.a.address}:")), "")

    # random loss: wait until the server's duplicate ACKs and the client's retransmissions
    # have both happened twice (what the assertions below need), however long the dice take
    server_end = f"{net.b.address}:{PORT}"
    wait_for(lambda: client_end() and seen("duplicate_acks", server_end) >= 2
             and seen("retransmissions", client_end()) >= 2, 60,
             "the server's duplicate ACKs and the client's retransmissions in a's capture")
    conv.stop()
    a_pcap = assert_agrees(conv.pcaps["a"])
    assert_agrees(conv.pcaps["b"])
    client = endpoint(net.a, a_pcap, server=False)
    server = endpoint(net.b, a_pcap, server=True)
    assert a_pcap[client].retransmissions >= 2 and a_pcap[server].duplicate_acks >= 2


def test_a_retransmission_after_an_ack_of_unseen_data_is_fast_as_tshark_says():
    """The first 400 frames (headers only: ``editcap -F pcap -s 128``) of b's capture (on
    ``any``) from a run of the lossy-port test above where tshark and this analysis
    disagreed: b ACKs data its capture never saw from a (an ``ACKed unseen segment``), and
    a's retransmission at that ACK 54 us later is a *fast* retransmission to Wireshark 4.0,
    whose duplicate-ACK count is unsigned (-1 after such an ACK is >= 2)."""
    dirs = assert_agrees(DATA / "lossy-port-cooked.pcap")
    assert dirs["10.233.0.1:37339"].fast_retransmissions == 1


def test_a_retransmission_stamped_before_the_segment_it_follows_is_no_out_of_order(tmp_path):
    """tcpdump on ``any`` may stamp a frame a few microseconds before the one it follows
    in the file (different CPUs). Wireshark's time differences are unsigned, so such a
    retransmission is not out of order (its time since the highest segment is "huge"):
    the capture above with frame 79 (a retransmission) stamped 8 us before frame 77."""
    raw = bytearray((DATA / "lossy-port-cooked.pcap").read_bytes())
    at, offsets = 24, []
    while at + 16 <= len(raw):
        offsets.append(at)
        at += 16 + struct.unpack_from("<I", raw, at + 8)[0]
    sec, usec = struct.unpack_from("<II", raw, offsets[76])  # frame 77
    usec -= 8
    if usec < 0:
        sec, usec = sec - 1, usec + 1_000_000
    struct.pack_into("<II", raw, offsets[78], sec, usec)  # frame 79
    pcap = tmp_path / "restamped.pcap"
    pcap.write_bytes(bytes(raw))
    dirs = assert_agrees(pcap)
    assert dirs["10.233.0.1:37339"].out_of_order == 0


def test_a_segment_one_first_rtt_after_the_highest_is_a_retransmission():
    """b's capture of a lossy-port run (CI, 13:07) where tshark counted 33 retransmissions
    from a and we 32: frame 340 (data lost before b saw it) came 51 us after the highest
    segment, and the first RTT was 51 us. Wireshark subtracts integer times, finds 51 us not
    below the window and calls it a retransmission; our float epoch seconds made it 50.99 us
    and out of order."""
    dirs = assert_agrees(DATA / "lossy-port-b-32-vs-33.pcap")
    assert dirs["10.233.0.1:53737"].retransmissions == 33
    assert dirs["10.233.0.1:53737"].out_of_order == 0


def test_reset_and_who_sent_it(talk):
    conv = talk()
    net = conv.net
    conv.client.send_signal(signal.SIGUSR1)  # SO_LINGER 0 and close: a RST from a
    conv.server.wait(timeout=20)  # the server's read fails: the RST arrived
    conv.stop()
    for pcap in conv.pcaps.values():
        dirs = assert_agrees(pcap)
        client = endpoint(net.a, dirs, server=False)
        server = endpoint(net.b, dirs, server=True)
        assert dirs[client].resets >= 1 and dirs[server].resets == 0
        (conn,) = tcp.analyze_pcaps([pcap], port=PORT).connections()
        assert conn.reset_by == [client]


def _slice(src: Path, dst: Path, skip: int) -> None:
    """``src`` without its first ``skip`` packets: a capture that began later."""
    raw = src.read_bytes()
    out, pos, n = [raw[:24]], 24, 0
    while pos + 16 <= len(raw):
        caplen = struct.unpack_from("<I", raw, pos + 8)[0]
        if n >= skip:
            out.append(raw[pos:pos + 16 + caplen])
        pos, n = pos + 16 + caplen, n + 1
    dst.write_bytes(b"".join(out))


def test_healthy_capture_started_mid_connection_has_no_flags(talk, tmp_path):
    conv = talk()
    start = len(list(PcapReader(conv.pcaps["a"])))
    wait_for(lambda: len(list(PcapReader(conv.pcaps["a"]))) > start + 60, 20, "more conversation")
    conv.stop()
    assert_agrees(conv.pcaps["a"])
    for skip in range(0, 40):
        part = tmp_path / f"part{skip}.pcap"
        _slice(conv.pcaps["a"], part, skip)
        for d in analyze(part).values():
            assert (d.retransmissions, d.duplicate_acks, d.zero_windows, d.lost_segments,
                    d.unanswered_keepalives, d.out_of_order) == (0, 0, 0, 0, 0, 0), (skip, d)


def test_netpair_leaves_nothing_and_removes_a_dead_runs_leftovers():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{np.PREFIX}{dead.pid}-x-sw"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    net = NetPair()  # its set-up removes what dead runs left
    try:
        assert stale not in np.namespaces()
        assert np.remove_leftovers() == []  # our own (live) namespaces stay
        ours = [net.switch, net.a.ns, net.b.ns]
        assert set(ours) <= set(np.namespaces())
        net.cut(net.a)
        sleeper = net.start(net.b, ["sleep", "600"])
    finally:
        net.close()
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True)
    assert not set(ours) & set(np.namespaces())  # the cut's table went with the switch
    assert sleeper.poll() is not None
