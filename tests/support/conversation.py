"""A scoutfs-like conversation between two namespace test hosts for the network tests:
a server on ``b`` and a client on ``a`` (tests/support/cluster_peer.py: the cluster port,
scoutfs's socket options, a 10 Hz UDP heartbeat on the same port), tcpdump recording on
both (``a`` on eth0: Ethernet; ``b`` on any: Linux cooked).

The timeouts are scaled down: TCP_USER_TIMEOUT 6000 ms, so keepidle 3 s (scoutfs: 24000
ms and 21 s); keepintvl 1 s as in scoutfs.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from tests.support.helpers import wait_for
from tests.support.netpair import NetHost, NetPair

PORT = 7000
USER_TIMEOUT_MS = 6000
KEEPIDLE = USER_TIMEOUT_MS / 1000 - 3
PEER = str(Path(__file__).parent / "cluster_peer.py")


class Conversation:
    """Server on b, client on a, both captured; :meth:`stop` ends the captures."""

    def __init__(self, net: NetPair, tmp: Optional[Path], size: int = 100, interval: float = 0.1) -> None:
        """``tmp``: where the pcaps go (None: no capture); ``interval`` 0: an idle connection."""
        self.net, self.tmp = net, tmp
        self.caps = []
        if tmp is not None:
            self.pcaps = {"a": tmp / "a.pcap", "b": tmp / "b.pcap"}
            expr = f"host {net.a.address} and host {net.b.address} and (tcp port {PORT} or udp port {PORT})"
            self.caps = [net.capture(net.a, self.pcaps["a"], expr),
                         net.capture(net.b, self.pcaps["b"], expr, "any")]
        self.server = self._peer(net.b, net.a, "server", size, interval)
        assert self.server.stdout is not None
        assert self.server.stdout.readline().strip() == "listening"
        self.client = self._peer(net.a, net.b, "client", size, interval)
        for proc in (self.client, self.server):
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "connected"
        wait_for(lambda: self.bytes_acked(net.a) > 5 * size or interval == 0, 20, "the conversation")

    def _peer(self, host: NetHost, other: NetHost, role: str, size: int, interval: float) -> subprocess.Popen:
        return self.net.start(host, [sys.executable, PEER, role, host.address, other.address, str(PORT),
                                     "--size", str(size), "--interval", str(interval),
                                     "--user-timeout-ms", str(USER_TIMEOUT_MS)],
                              stdout=subprocess.PIPE, text=True)

    def ss(self, host: NetHost) -> str:
        return self.net.run(host, ["ss", "-tin", "state", "established",
                                   f"( sport = :{PORT} or dport = :{PORT} )"]).stdout

    def bytes_acked(self, host: NetHost) -> int:
        m = re.search(r"bytes_acked:(\d+)", self.ss(host))
        return int(m.group(1)) if m else 0

    def retransmitted(self, host: NetHost) -> int:
        m = re.search(r"retrans:\d+/(\d+)", self.ss(host))
        return int(m.group(1)) if m else 0

    def stop(self) -> float:
        for cap in self.caps:
            cap.stop()
        return time.time()
