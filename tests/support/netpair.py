"""Two test hosts behind one switch, for network incidents: namespaces ``a`` and ``b``,
each with ``eth0`` on a bridge in a third namespace ``sw`` (the switch). Nothing is
routed to or from the root namespace: traffic only ever goes between these namespaces.

A partition is a failed switch port: :meth:`NetPair.cut` loads an nftables ``bridge``
table in the switch that drops what the bridge forwards to and from one host's port, so
each host still sees its own packets leave (its capture shows it retransmitting) and
nothing arrive. Processes run in a host with ``nsenter`` (not ``ip netns exec``, which
remounts /sys).

Names carry the owner's pid (``sfc-np-PID-TAG-sw``/``-a``/``-b``), so a later run
removes the leftovers of a killed one (its pid is gone) and never a concurrent one's;
:meth:`NetPair.close` (also at exit and on SIGTERM: tests/support/netns.py) ends every
process in the namespaces and deletes them, their links and the nftables tables in them.

Usage::

    def test_x(netpair):
        net = netpair()
        server = net.start(net.b, ["python3", PEER, "server", ...])
        with net.capture(net.a, tmp_path / "a.pcap", "tcp port 7000"):
            net.cut(net.a)
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from tests.support import netns
from tests.support.netns import run as _run

PREFIX = "sfc-np-"
CUT_TABLE = "sfc_cut"
_TAGS = itertools.cycle("abcdefghijklmnopqrstuvwxyz")


def namespaces() -> List[str]:
    return netns.namespaces(PREFIX)


def remove_leftovers() -> List[str]:
    """Delete the namespaces of earlier runs whose owner is gone."""
    return netns.remove_leftovers(PREFIX)


@dataclasses.dataclass
class NetHost:
    name: str  # "a" or "b"
    ns: str
    address: str
    port: str  # its port on the switch (an interface in the switch namespace)

    def enter(self) -> List[str]:
        """The command prefix that runs a program in this host."""
        return ["nsenter", f"--net=/run/netns/{self.ns}"]


class Capture:
    """tcpdump writing ``path`` in a host until :meth:`stop` (or the ``with`` ends)."""

    def __init__(self, host: NetHost, path: Path, expr: str, interface: str = "eth0") -> None:
        self.path = path
        self.stderr = path.with_suffix(".stderr")
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [*host.enter(), "tcpdump", "-p", "-n", "-i", interface, "--immediate-mode", "-U",
                 "-w", str(path), expr], stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 10
        while "listening on" not in self.stderr.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tcpdump did not start: {self.stderr.read_text()}")
            time.sleep(0.01)  # polling for tcpdump's "listening on"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class NetPair:
    """Hosts ``a`` (10.233.0.1) and ``b`` (10.233.0.2) on the switch; see the module doc."""

    __test__ = False

    def __init__(self) -> None:
        remove_leftovers()
        tag = f"{os.getpid()}-{next(_TAGS)}{os.urandom(2).hex()}"
        self.switch = f"{PREFIX}{tag}-sw"
        self.a = NetHost("a", f"{PREFIX}{tag}-a", "10.233.0.1", "pa")
        self.b = NetHost("b", f"{PREFIX}{tag}-b", "10.233.0.2", "pb")
        self.procs: List[subprocess.Popen] = []
        self._closed = False
        netns.set_up(self._make, self.close)

    def _make(self) -> None:
        netns.make_switch(self.switch)
        for host in (self.a, self.b):
            _run("ip", "netns", "add", host.ns)
            netns.plug(self.switch, host.port, host.ns, "eth0", f"{host.address}/24")
            _run("ip", "-n", host.ns, "link", "set", "lo", "up")
        netns.wait_forwarding(self.switch, 2)

    # -- use --------------------------------------------------------------------------

    def start(self, host: NetHost, argv: List[str], **popen) -> subprocess.Popen:
        """Start ``argv`` in ``host``; ended at :meth:`close` if still running."""
        proc = subprocess.Popen([*host.enter(), *argv], **popen)
        self.procs.append(proc)
        return proc

    def run(self, host: NetHost, argv: List[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([*host.enter(), *argv], capture_output=True, text=True, timeout=timeout)

    def capture(self, host: NetHost, path: Path, expr: str, interface: str = "eth0") -> Capture:
        cap = Capture(host, path, expr, interface)
        self.procs.append(cap.proc)
        return cap

    def cut(self, host: NetHost) -> None:
        """The switch drops every frame to and from ``host`` (its port failed)."""
        _run("ip", "netns", "exec", self.switch, "nft", "-f", "-", input=(
            f"table bridge {CUT_TABLE} {{\n  chain forward {{\n"
            "    type filter hook forward priority 0; policy accept;\n"
            f'    iifname "{host.port}" drop\n    oifname "{host.port}" drop\n  }}\n}}\n'))

    def lose(self, host: NetHost, percent: int) -> None:
        """The switch drops ``percent`` % of the frames it forwards from ``host``, at
        random (a bad cable), instead of all of them."""
        _run("ip", "netns", "exec", self.switch, "nft", "-f", "-", input=(
            f"table bridge {CUT_TABLE} {{\n  chain forward {{\n"
            "    type filter hook forward priority 0; policy accept;\n"
            f'    iifname "{host.port}" numgen random mod 100 < {percent} drop\n  }}\n}}\n'))

    def heal(self) -> None:
        _run("ip", "netns", "exec", self.switch, "nft", "delete", "table", "bridge", CUT_TABLE, check=False)

    def tables(self) -> str:
        """The switch's nftables ruleset (what a cut left)."""
        return _run("ip", "netns", "exec", self.switch, "nft", "list", "ruleset").stdout

    def hosts(self) -> Iterator[NetHost]:
        return iter((self.a, self.b))

    # -- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a stopped process cannot end otherwise
                proc.kill()
            proc.wait()
        for ns in (self.a.ns, self.b.ns, self.switch):
            netns.remove(ns)
        netns.untrack(self.close)


@pytest.fixture
def netpair():
    """``netpair()`` makes two hosts on a switch; all removed when the test ends."""
    made: List[NetPair] = []

    def make() -> NetPair:
        pair = NetPair()
        made.append(pair)
        return pair

    yield make
    for pair in made:
        pair.close()
