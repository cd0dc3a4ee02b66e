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

:meth:`ClusterNet.close` (also at exit and on SIGTERM: tests/support/netns.py) deletes
the switch namespace (the ``cl0`` links go with it) and the tables in the hosts; a later
run removes the switch of a killed one (its pid is gone).
"""

from __future__ import annotations

import itertools
import os
from typing import List

from tests.support import netns
from tests.support.netns import run as _run
from tests.support.testhosts import Host, TestHosts

PREFIX = "sfc-cn-"
CUT_TABLE = "sfc_cut"
_TAGS = itertools.cycle("abcdefghijklmnopqrstuvwxyz")


def remove_leftovers() -> List[str]:
    """Delete the switch namespaces of earlier runs whose owner is gone."""
    return netns.remove_leftovers(PREFIX)


class ClusterNet:
    """The cluster network of ``hosts`` (see the module doc)."""

    def __init__(self, hosts: TestHosts) -> None:
        remove_leftovers()
        self.hosts = hosts
        self.switch = f"{PREFIX}{os.getpid()}-{next(_TAGS)}{os.urandom(2).hex()}"
        self.cut_hosts: List[Host] = []
        self._closed = False
        netns.set_up(self._make, self.close)

    def address(self, name: str) -> str:
        """``name``'s address on the cluster network."""
        return f"10.232.0.{self.hosts.names.index(name) + 1}"

    def _port(self, host: Host) -> str:
        return f"cp{self.hosts.names.index(host.name) + 1}"

    def _make(self) -> None:
        netns.make_switch(self.switch)
        for host in self.hosts:
            netns.plug(self.switch, self._port(host), host.ns, "cl0", f"{self.address(host.name)}/24")
        netns.wait_forwarding(self.switch, len(self.hosts.names))

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
        netns.remove(self.switch)
        netns.untrack(self.close)
