"""The tcp and quorum analyzers and the verdict's network rules on real incidents: a
scoutfs-like conversation between two namespace test hosts (``a`` the client, ``b`` the
server on the cluster port; tests/support/conversation.py: scoutfs's socket options with
TCP_USER_TIMEOUT 6000 ms, keepidle 3 s, a 10 Hz UDP heartbeat on the same port), recorded
by the real scoutfs-collect on both hosts, which stop on the fencing line the test writes
into /dev/kmsg (the hosts share one kernel log). The archives, alone and as a cluster
bundle, read as a support engineer reads them: ``inspect --findings --json``. Counts are
checked against tshark's on the pcap inside the archive.

Fencing lines (scoutfs kmod/src): net.c ``client SIN_FMT reconnect timed out, fencing``;
quorum.c ``fencing previous leader SCSBF at term %llu in slot %u with address SIN_FMT``.
Stall line: kernel/hung_task.c ``INFO: task %s:%d blocked for more than %ld seconds.``
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from scoutfs_collect.analysis.packets import segment
from scoutfs_collect.system.pcap import PcapReader
from tests.support import tshark
from tests.support.cli import Cli
from tests.support.conversation import PORT, Conversation
from tests.support.helpers import extract, kmsg_write, unique, wait_for
from tests.support.incident import Recorder, bundle, client_port
from tests.support.netpair import NetPair, netpair  # noqa: F401  (the fixture)

# once: incidents in namespaces (the verdict rules' own code also runs on both Pythons in test_findings)
pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux"),
              pytest.mark.once]

HUNG = "INFO: task scoutfs_net:4711 blocked for more than 120 seconds."
# quorum.c record_hb_delay(), through scoutfs_info's "scoutfs f.%06x.r.%06x: " prefix
HB_DELAY = "scoutfs f.5c0a11.r.00c0de: longest quorum heartbeat recv delay of 5 sec"


def findings(tmp: Path, path: Path) -> dict:
    cli = Cli(Path(tempfile.mkdtemp(prefix="q.", dir=tmp)))
    result = cli.run("inspect", str(path), "--findings", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def of(doc: dict, key: str, node: str = "") -> List[dict]:
    return [f for f in doc["findings"] if f["key"] == key and (not node or f["node"] == node)]


def reconnect_fence(net: NetPair, port: int) -> str:
    return f"scoutfs f.5c0a11.r.00c0de: client {net.a.address}:{port} reconnect timed out, fencing"


def heartbeats(pcap: Optional[Path]) -> int:
    """The UDP datagrams in a capture so far."""
    if pcap is None:
        return 0
    reader = PcapReader(pcap, with_data=True)
    return sum(1 for r in reader if (s := segment(r.time, reader.linktype, r.data)) and s.proto == 17)


def record(net: NetPair, tmp: Path, pattern: str) -> Dict[str, Recorder]:
    """Both hosts recording; returns once each has 2 s of heartbeats in its capture."""
    recs = {h.name: Recorder(net, h, tmp, net.b, pattern) for h in net.hosts()}
    for r in recs.values():
        wait_for(lambda r=r: heartbeats(r.pcap()) >= 40, 30, "2 s of heartbeats captured")
    return recs


def archived_pcap(tmp: Path, archive: Path) -> Path:
    top = extract(archive, tmp / unique("x"))
    return top / "tcpdump" / "tcpdump.pcap0"


def partition(net: NetPair, tmp: Path, before_fence: List[str]) -> Dict[str, Path]:
    """a's switch port fails; once a retransmitted unanswered and b's keep-alive probes
    went out (scoutfs's keepintvl: one a second), ``before_fence`` lines then b's fencing
    line; the archives of node-a, node-b."""
    conv = Conversation(net, None)
    fence = reconnect_fence(net, client_port(conv))
    recs = record(net, tmp, fence.split(": ", 1)[1])
    net.cut(net.a)
    wait_for(lambda: conv.retransmitted(net.a) >= 4, 30, "a's retransmissions")
    server = f"{net.b.address}:{PORT}"
    wait_for(lambda: tshark.count(recs["b"].pcap(), "tcp.analysis.keep_alive")[server] >= 2, 30,
             "b's second keep-alive probe (the first went unanswered)")
    for line in before_fence:
        kmsg_write(line, 3)
    kmsg_write(fence)
    return {f"node-{n}": r.finish() for n, r in recs.items()}


def test_a_partition_is_a_network_verdict_with_the_victims_own_retransmissions(netpair, tmp_path):  # noqa: F811
    net = netpair()
    archives = partition(net, tmp_path, [])
    doc = findings(tmp_path, bundle(tmp_path, archives, "node-b"))
    v = doc["verdict"]
    assert v["category"] == "network", v
    assert {"tcp.retransmission", "tcp.silence", "fence.client_reconnect"} <= set(v["keys"])
    (fence,) = {f["details"]["victim_node"] for f in doc["findings"] if f["key"] == "fence.client_reconnect"}
    assert fence == "node-a"
    # the victim's own capture: its retransmissions to the server, none answered, as tshark counts them
    (retrans,) = of(doc, "tcp.retransmission", "node-a")
    client = retrans["details"]["src"]
    assert retrans["details"]["dst"] == f"{net.b.address}:{PORT}" and client.startswith(f"{net.a.address}:")
    assert retrans["details"]["unanswered"] == retrans["details"]["count"] >= 4
    theirs = tshark.count(archived_pcap(tmp_path, archives["node-a"]), "tcp.analysis.retransmission")
    assert theirs == {client: retrans["details"]["count"]}
    assert retrans["relative"] < 0 and "unanswered" in retrans["summary"]
    # the server's capture: nothing from the victim since the cut, while its probes went out
    (silence,) = of(doc, "tcp.silence", "node-b")
    assert silence["details"]["src"] == client and silence["details"]["silent_s"] >= 3
    assert of(doc, "tcp.keepalive_unanswered", "node-b")[0]["details"]["src"] == f"{net.b.address}:{PORT}"
    # the quorum heartbeats from the victim stopped reaching the server too
    stopped = [f for f in of(doc, "quorum.stopped", "node-b")
               if f["details"]["src"] == f"{net.a.address}:{PORT}"]
    assert stopped and stopped[0]["details"]["silent_s"] >= 3
    # a capture that began in mid-connection: no false flag on either side's first segments
    assert not of(doc, "tcp.retransmission", "node-b") and not of(doc, "tcp.duplicate_ack")


def test_the_partition_without_the_victims_archive_is_undetermined(netpair, tmp_path):  # noqa: F811
    """The server's probes unanswered and nothing from the victim: keepalives are answered
    by the peer's kernel, so the network or the whole node (a panic, power loss); only
    the victim's own archive tells them apart."""
    net = netpair()
    archives = partition(net, tmp_path, [])
    doc = findings(tmp_path, archives["node-b"])
    v = doc["verdict"]
    assert v["category"] == "undetermined" and v["keys"] == ["fence.client_reconnect"]
    assert any(m.startswith(f"no archive from the victim ({net.a.address}:") for m in v["missing"]), v
    assert of(doc, "tcp.silence") and of(doc, "tcp.keepalive_unanswered")
    assert "the network or the whole node" in v["summary"], v


def test_a_hung_task_on_the_victim_makes_the_same_partition_a_node_stall(netpair, tmp_path):  # noqa: F811
    net = netpair()
    archives = partition(net, tmp_path, [HUNG, HB_DELAY])
    doc = findings(tmp_path, bundle(tmp_path, archives, "node-b"))
    v = doc["verdict"]
    assert v["category"] == "node-stall" and "kernel.hung_task" in v["keys"], v
    assert "tcp.retransmission" not in v["keys"] and of(doc, "tcp.retransmission", "node-a")
    delay = of(doc, "quorum.delay", "node-a")[0]
    assert delay["evidence"][0]["text"] == HB_DELAY
    assert delay["details"] == {"direction": "recv", "seconds": 5} and delay["category"] == "network"


def stopped_reader(net: NetPair, tmp: Path, fence: Callable[[Conversation], str]) -> Dict[str, Path]:
    """b's scoutfs stops reading (SIGSTOP) while a keeps writing; once both captures show
    b's zero windows, the fencing line ``fence(conversation)``; the archives of node-a, node-b."""
    conv = Conversation(net, None, size=16384, interval=0.01)
    line = fence(conv)
    recs = record(net, tmp, line.split(": ", 1)[1])
    conv.server.send_signal(signal.SIGSTOP)
    server = f"{net.b.address}:{PORT}"
    for r in recs.values():
        wait_for(lambda r=r: tshark.count(r.pcap(), "tcp.analysis.zero_window")[server] >= 3, 30,
                 "b's zero windows")
    kmsg_write(line)
    archives = {f"node-{n}": r.finish() for n, r in recs.items()}
    conv.server.send_signal(signal.SIGCONT)
    return archives


def test_a_stopped_reader_is_a_node_stall_by_its_zero_window(netpair, tmp_path):  # noqa: F811
    """b's scoutfs stops reading; a new leader fences b."""
    net = netpair()
    server = f"{net.b.address}:{PORT}"
    archives = stopped_reader(net, tmp_path, lambda conv: (
        f"scoutfs f.5c0a11.r.00c0de: fencing previous leader f.5c0a11.r.b0b0b0 at term 7 in slot 1 "
        f"with address {server}"))
    doc = findings(tmp_path, bundle(tmp_path, archives, "node-a"))
    v = doc["verdict"]
    assert v["category"] == "node-stall", v
    assert {"tcp.zero_window", "fence.quorum_block_leader"} <= set(v["keys"])
    for node in ("node-a", "node-b"):
        (zw,) = of(doc, "tcp.zero_window", node)
        assert zw["details"]["src"] == server and zw["category"] == "node-stall"
        theirs = tshark.count(archived_pcap(tmp_path, archives[node]), "tcp.analysis.zero_window")
        assert theirs == {server: zw["details"]["count"]}
    # without the victim's archive: a's capture shows b's zero window, so b's kernel was up
    # and its reader stopped; b's own log, which could tell why, is named missing
    v = findings(tmp_path, archives["node-a"])["verdict"]
    assert v["category"] == "node-stall", v
    assert {"tcp.zero_window", "fence.quorum_block_leader"} <= set(v["keys"])
    assert "hung tasks, a soft lockup or an OOM kill cannot be told apart" in v["summary"]
    (missing,) = v["missing"]
    assert missing.startswith(f"no archive from the victim ({server}")


def test_a_zero_window_from_another_node_is_not_the_victims(netpair, tmp_path):  # noqa: F811
    """b stops reading, but the fence is a's (the client): b's zero window does not make
    a node-stall of a, whose own data shows nothing conclusive."""
    net = netpair()
    archives = stopped_reader(net, tmp_path, lambda conv: reconnect_fence(net, client_port(conv)))
    doc = findings(tmp_path, bundle(tmp_path, archives, "node-b"))
    v = doc["verdict"]
    assert v["category"] == "undetermined" and v["keys"] == ["fence.client_reconnect"], v
    assert {f["details"]["src"] for f in of(doc, "tcp.zero_window")} == {f"{net.b.address}:{PORT}"}


def test_a_lossy_port_is_not_a_cut(netpair, tmp_path):  # noqa: F811
    """5 % of a's frames lost at the switch: a retransmits, but every retransmission is
    answered and b keeps hearing from a: the network rule does not hold."""
    net = netpair()
    conv = Conversation(net, None, size=16384, interval=0.01)
    fence = reconnect_fence(net, client_port(conv))
    recs = record(net, tmp_path, fence.split(": ", 1)[1])
    net.lose(net.a, 5)
    client = f"{net.a.address}:{client_port(conv)}"
    wait_for(lambda: tshark.count(recs["a"].pcap(), "tcp.analysis.retransmission")[client] >= 3, 60,
             "a's retransmissions")
    kmsg_write(fence)
    archives = {f"node-{n}": r.finish() for n, r in recs.items()}
    doc = findings(tmp_path, bundle(tmp_path, archives, "node-b"))
    assert doc["verdict"]["category"] == "undetermined", doc["verdict"]
    (retrans,) = of(doc, "tcp.retransmission", "node-a")
    assert retrans["details"]["count"] >= 3 and not of(doc, "tcp.silence")
    # what could still tell: the collector these recorders did not run, and the 44 s before
    # a reconnect fence that seconds-long recordings cannot show
    missing = doc["verdict"]["missing"]
    assert missing[0] == "no scoutfs counter series from the victim (node-a)"
    assert missing[1:] and all("the 44 s before the trigger (client_reconnect)" in m for m in missing[1:])


def test_a_reset_names_who_sent_it(netpair, tmp_path):  # noqa: F811
    net = netpair()
    conv = Conversation(net, None)
    end = unique("sfc-test-reset-done")
    recs = record(net, tmp_path, end)
    conv.client.send_signal(signal.SIGUSR1)  # SO_LINGER 0 and close: the kernel sends a RST
    conv.server.wait(timeout=20)  # the server's read failed: the RST arrived
    kmsg_write(end)
    archives = {f"node-{n}": r.finish() for n, r in recs.items()}
    doc = findings(tmp_path, bundle(tmp_path, archives, "node-b"))
    for node in archives:
        (rst,) = of(doc, "tcp.reset", node)
        assert rst["details"]["src"].startswith(f"{net.a.address}:") and rst["relative"] < 0
        assert rst["summary"].endswith(f"reset the connection to {net.b.address}:{PORT} (RST)")
