"""The tcpdump collector's interface check inside a test host: a network namespace entered
with ``nsenter --net`` and no remount of /sys, as a container sharing the host's /sys, so
/sys/class/net there lists the root namespace's interfaces. ``scoutfs-collect check`` run
in the host must judge the host's own interfaces: one only the host has is accepted, one
only the root namespace has is refused as missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scoutfs_collect.system import netif
from scoutfs_collect.system.packet_socket import route_interface
from tests.support.cli import Cli
from tests.support.testhosts import Host, testhosts  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux")


def check_in(host: Host, cli: Cli, interface: str) -> subprocess.CompletedProcess:
    """``scoutfs-collect check`` inside ``host`` with the tcpdump collector on ``interface``."""
    profile = cli.profile(f"collectors:\n  tcpdump: {{interface: {interface}, heartbeat_timeout: 0}}\n"
                          "triggers:\n  t: {type: timer, after: 1}\n", name=f"{interface}.yaml")
    argv = cli.argv("check", "--profile", str(profile), "--output-dir", str(cli.out), host.address, "7000")
    return subprocess.run(["nsenter", f"--net=/run/netns/{host.ns}", *argv], env=cli.env, cwd=cli.tmp,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def in_host(host: Host, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net=/run/netns/{host.ns}", *argv], capture_output=True, text=True,
                          timeout=30)


def test_the_interface_check_sees_the_namespace_it_runs_in(testhosts, tmp_path: Path):  # noqa: F811
    host = testhosts(1)["th1"]
    cli = Cli(tmp_path)
    root_only = route_interface(host.address)  # the root side of the host's veth pair
    own = f"sfq{os.getpid()}"  # a veth pair inside the host: gone with its namespace
    subprocess.run(["ip", "-n", host.ns, "link", "add", own, "type", "veth", "peer", "name", f"{own}p"],
                   check=True)
    subprocess.run(["ip", "-n", host.ns, "link", "set", own, "up"], check=True)
    assert not netif.exists(own) and netif.exists(root_only)
    # the premise: /sys in the host shows the root namespace's interfaces, not the host's
    assert in_host(host, "test", "-d", f"/sys/class/net/{root_only}").returncode == 0
    assert in_host(host, "test", "-d", f"/sys/class/net/{own}").returncode != 0

    ok = check_in(host, cli, own)
    assert ok.returncode == 0 and "check: ready to run" in ok.stdout + ok.stderr, ok.stdout + ok.stderr
    bad = check_in(host, cli, root_only)
    said = bad.stdout + bad.stderr
    assert bad.returncode == 2, said
    assert f"error: tcpdump: interface '{root_only}' does not exist on this host" in said
