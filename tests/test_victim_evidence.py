"""The victim keeps its own evidence when nobody can reach it (issue 17, item 4).

Two test hosts with sshd (tests/support/testhosts.py): ``th1`` the server, ``th2`` the
victim, on a cluster network of their own (tests/support/clusternet.py). scoutfs cannot
run here: its stand-in is tests/support/cluster_peer.py, a TCP connection on the cluster
port with scoutfs's socket options (TCP_USER_TIMEOUT 6000 ms: keepidle 3 s, keepintvl
1 s) carrying a message every 100 ms, and a 10 Hz UDP heartbeat. ``scoutfs-collect
cluster`` runs the default profile on both against the server's IP:PORT, with the
overrides of tests/support/default_profile.py (a simulated scoutfs sysfs tree, sched
events for ftrace, and fencing patterns that carry each host's name: the hosts share one
kernel log, and the server's fencing line must not end the victim's run too).

Then the victim's switch port fails and its management path with it: the coordinator
loses its session (``lost``); the server logs the fencing line (written into /dev/kmsg
by the test, in the format of scoutfs's net.c, since scoutfs cannot run here), which
ends the server's run; the victim, whom nobody can reach, is ended by its own
``peer-silence`` trigger and packs its archive. Once the link heals, ``cluster gather``
brings that archive into a bundle.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Dict, List

import pytest

from scoutfs_collect.analysis import tcp
from scoutfs_collect.demo import fixture
from scoutfs_collect.system.pcap import PcapReader
from tests.support import default_profile
from tests.support.cluster import Cluster, bundle_path, cluster_json
from tests.support.clusternet import ClusterNet
from tests.support.conversation import PEER, PORT, USER_TIMEOUT_MS
from tests.support.helpers import extract, kmsg_write, wait_for
from tests.support.testhosts import testhosts  # noqa: F401  (the fixture)

# once: a kernel network incident; gather's own code runs on both Pythons (test_cluster_gather)
pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux"),
              pytest.mark.once]


def _peer(c: Cluster, net: ClusterNet, name: str, role: str, peer: str) -> subprocess.Popen:
    """The scoutfs stand-in on host ``name`` (ended at the test's end)."""
    return subprocess.Popen(["nsenter", f"--net=/run/netns/{c.hosts[name].ns}", sys.executable, PEER,
                             role, net.address(name), net.address(peer), str(PORT),
                             "--user-timeout-ms", str(USER_TIMEOUT_MS)],
                            stdout=subprocess.PIPE, text=True)


def _bytes_acked(c: Cluster, name: str) -> int:
    ss = subprocess.run(["nsenter", f"--net=/run/netns/{c.hosts[name].ns}", "ss", "-tin",
                         "state", "established", f"( dport = :{PORT} )"], capture_output=True, text=True)
    m = re.search(r"bytes_acked:(\d+)", ss.stdout)
    return int(m.group(1)) if m else 0


def _segments(top: Path) -> List[tcp.Segment]:
    """The TCP segments in an extracted archive's packet ring, in time order."""
    segments = []
    for pcap in sorted((top / "tcpdump").glob("tcpdump.pcap*")):
        reader = PcapReader(pcap, with_data=True)
        segments += [s for s in (tcp.parse(r.time, reader.linktype, r.data) for r in reader) if s]
    return sorted(segments, key=lambda s: s.time)


def _node_archive(bundle: Path, member: str, tmp: Path) -> Path:
    """A node's archive in the bundle, extracted with the system tar (its top directory)."""
    dest = tmp / Path(member).name
    with tarfile.open(bundle) as tar:
        (info,) = [m for m in tar.getmembers() if m.name.endswith("/" + member)]
        f = tar.extractfile(info)
        assert f is not None
        dest.write_bytes(f.read())
    return extract(dest, tmp / "x")


def test_victim_cut_off_keeps_its_own_archive_and_gather_brings_it(testhosts, tmp_path):  # noqa: F811
    hosts = testhosts(2)
    net = ClusterNet(hosts)
    c = Cluster(hosts, tmp_path)
    peers: List[subprocess.Popen] = []
    try:
        server, victim = net.address("th1"), net.address("th2")
        peers.append(_peer(c, net, "th1", "server", "th2"))
        assert peers[0].stdout is not None and peers[0].stdout.readline().strip() == "listening"
        peers.append(_peer(c, net, "th2", "client", "th1"))
        sysfs = tmp_path / "sysfs"
        fixture.build(sysfs)
        tag = f"sfc-%h-{hosts.token}"
        ssh = f"{hosts.ssh_options} -oServerAliveInterval=1 -oServerAliveCountMax=2"
        argv = [sys.executable, "-m", "scoutfs_collect", "cluster", "-w", hosts.nodeset, "-o", ssh,
                "--profile", "default", "--output-dir", str(hosts.dir / "out" / "%h"),
                "--events-file", str(c.events),
                *default_profile.set_args(sysfs, c.instance("%h"), tag), server, str(PORT)]
        proc = subprocess.Popen(argv, cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
        c.procs.append(proc)
        c.wait_event("armed", proc, timeout=120)
        # Two seconds of conversation in the victim's ring before the cut.
        acked = _bytes_acked(c, "th2")
        wait_for(lambda: _bytes_acked(c, "th2") >= acked + 20 * 100, 20, "20 more messages acknowledged")
        cut_at = time.time()
        net.cut("th2")
        cut_done = time.time()
        lost = c.wait_event("error", proc, node="th2", timeout=60)
        assert "session lost mid-run" in lost["message"]
        # scoutfs's net.c: "client %pISpc reconnect timed out, fencing", after the fs prefix.
        kmsg_write(f"sfc-th1-{hosts.token} scoutfs f.5c0f5e.r.a1b2c3: client {victim}:40000 "
                   "reconnect timed out, fencing")
        status, out, err = c.finish(proc, timeout=120)
        assert status == 1, err
        live = cluster_json(bundle_path(out))
        assert live["nodes"]["th2"]["status"] == "lost" and live["nodes"]["th2"]["archive"] is None
        assert live["origin"]["node"] == "th1" and live["origin"]["name"] == "fencing"

        # Nobody reached the victim: its own trigger ended its run, and it packed.
        own = wait_for(lambda: list(hosts["th2"].output.glob("scoutfs-collect.*.tar.zst")), 60,
                       "the victim's own archive")
        net.heal()
        wait_for(lambda: not _status(c, "th2")["running"], 60, "the victim's run to end")
        r = c.run(c.gather_argv())
        assert r.returncode == 0, r.stdout + r.stderr
        bundle = bundle_path(r.stdout)
        nodes = cluster_json(bundle)["nodes"]

        # What a support engineer checks in the bundle.
        th2 = nodes["th2"]
        assert th2["status"] == "ok" and th2["archive"] == f"nodes/th2/{own[0].name}"
        assert th2["recovered"] is None  # it packed itself
        assert th2["trigger"]["name"] == "peer-silence" and th2["trigger"]["type"] == "peer-silence"
        assert f"→ {server}:{PORT} silent: our data unacknowledged" in th2["trigger"]["reason"]
        assert nodes["th1"]["trigger"]["name"] == "fencing"
        top = _node_archive(bundle, th2["archive"], tmp_path)
        manifest = json.loads((top / "manifest.json").read_text())
        assert manifest["trigger"]["type"] == "peer-silence"
        assert cut_at < manifest["trigger"]["time"] < cut_at + 10
        segs = _segments(top)
        to_server = [s.time for s in segs if s.dst == f"{server}:{PORT}"]
        from_server = [s.time for s in segs if s.src == f"{server}:{PORT}"]
        assert to_server[0] < cut_at - 1.5 and from_server[0] < cut_at - 1.5  # the seconds before
        assert from_server[-1] < cut_done  # nothing answered after the cut
        assert [t for t in to_server if t > cut_done]  # its retransmissions, unanswered
    finally:
        c.kill_all()
        for peer in peers:
            peer.kill()
            peer.wait()
        net.close()


def _status(c: Cluster, node: str) -> Dict:
    r = c.hosts.ssh(node, "scoutfs-collect cluster node-status")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])

