"""A cluster network between test hosts (tests/support/testhosts.py), and cutting a host
off it the way a failed switch port or cable does.

Each host gets ``cl0`` (10.232.0.I/24, I its number) on a bridge in a switch namespace of
its own (``sfc-cn-PID-TAG``), beside its management link ``eth0`` (the coordinator's ssh).
Nothing is routed to or from the root namespace: cluster traffic only goes between hosts.

:meth:`ClusterNet.cut` takes a host off both networks, as when the management network
is the cluster network: an nftables ``bridge`` table in the switch drops what the bridge
forwards to and from the host's port, and an ``inet`` table in the host's namespace
drops what comes and goes on its ``eth0`` (so the coordinator loses its session). The
cluster port is cut in the switch, not in the host: there a drop comes after the
host's packet taps for what arrives (its capture and its peer-silence trigger would
still see the server's ACKs) and before them for what leaves (they would not see its own
retransmissions); a failed port shows the host its own segments leaving and nothing
arriving. :meth:`ClusterNet.heal` removes both tables.

:meth:`ClusterNet.close` (also at exit) deletes the switch namespace (the ``cl0`` links
go with it) and the tables in the hosts; a later run removes the switch of a killed one
(its pid is gone).
"""

from __future__ import annotations

import atexit
import itertools
import os
import subprocess
import time
from typing import List, Optional

from tests.support.testhosts import Host, TestHosts, _alive, remove_namespace

PREFIX = "sfc-cn-"
CUT_TABLE = "sfc_cut"
_TAGS = itertools.cycle("abcdefghijklmnopqrstuvwxyz")


def _run(*argv: str, check: bool = True, input: Optional[str] = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, input=input)


def remove_leftovers() -> List[str]:
    """Delete the switch namespaces of earlier runs whose owner is gone."""
    removed = []
    listed = _run("ip", "netns", "list", check=False).stdout
    for ns in [line.split()[0] for line in listed.splitlines() if line.startswith(PREFIX)]:
        owner = ns[len(PREFIX):].split("-")[0]
        if owner.isdigit() and not _alive(int(owner)):
            remove_namespace(ns)
            removed.append(ns)
    return removed


class ClusterNet:
    """The cluster network of ``hosts`` (see the module doc)."""

    def __init__(self, hosts: TestHosts) -> None:
        remove_leftovers()
        self.hosts = hosts
        self.switch = f"{PREFIX}{os.getpid()}-{next(_TAGS)}{os.urandom(2).hex()}"
        self.cut_hosts: List[Host] = []
        self._closed = False
        atexit.register(self.close)
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def address(self, name: str) -> str:
        """``name``'s address on the cluster network."""
        return f"10.232.0.{self.hosts.names.index(name) + 1}"

    def _port(self, host: Host) -> str:
        return f"cp{self.hosts.names.index(host.name) + 1}"

    def _make(self) -> None:
        sw = self.switch
        _run("ip", "netns", "add", sw)
        _run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", sw, "link", "set", "br0", "up")
        for host in self.hosts:
            port = self._port(host)
            _run("ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "cl0",
                 "netns", host.ns)
            _run("ip", "-n", sw, "link", "set", port, "master", "br0", "up")
            _run("ip", "-n", host.ns, "addr", "add", f"{self.address(host.name)}/24", "dev", "cl0")
            _run("ip", "-n", host.ns, "link", "set", "cl0", "up")
        deadline = time.monotonic() + 10
        count = len(self.hosts.names)
        while _run("bridge", "-n", sw, "link", "show", check=False).stdout.count("state forwarding") < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the switch ports did not start forwarding")
            time.sleep(0.01)  # polling for the bridge ports' state

    def cut(self, name: str) -> None:
        """Take ``name`` off the cluster network (its switch port) and the management network."""
        host = self.hosts[name]
        port = self._port(host)
        _run("ip", "netns", "exec", self.switch, "nft", "-f", "-", input=(
            f"table bridge {CUT_TABLE} {{\n  chain forward {{\n"
            "    type filter hook forward priority 0; policy accept;\n"
            f'    iifname "{port}" drop\n    oifname "{port}" drop\n  }}\n}}\n'))
        _run("nsenter", f"--net=/run/netns/{host.ns}", "nft", "-f", "-", input=(
            f"table inet {CUT_TABLE} {{\n"
            "  chain input {\n    type filter hook input priority 0; policy accept;\n"
            '    iifname "eth0" drop\n  }\n'
            "  chain output {\n    type filter hook output priority 0; policy accept;\n"
            '    oifname "eth0" drop\n  }\n}\n'))
        self.cut_hosts.append(host)

    def heal(self) -> None:
        """Remove every cut."""
        _run("ip", "netns", "exec", self.switch, "nft", "delete", "table", "bridge", CUT_TABLE, check=False)
        for host in self.cut_hosts:
            _run("nsenter", f"--net=/run/netns/{host.ns}", "nft", "delete", "table", "inet", CUT_TABLE,
                 check=False)
        self.cut_hosts = []

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.heal()
        remove_namespace(self.switch)
        try:
            atexit.unregister(self.close)
        except (ValueError, TypeError):
            pass
