"""One owner of the test namespaces (tests/support/netns.py): a run that gets SIGTERM
while it holds test hosts, their cluster network and a net pair leaves none of them
behind (no namespace, no sshd) and still dies of the signal; a killed run's namespaces
are removed by the next run of any of the helpers, a live run's never."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import clusternet, netns, netpair, testhosts

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux")

ROOT = Path(__file__).resolve().parent.parent

# prints its namespaces, then its sshds' pids, and waits for a signal
HOLDER = textwrap.dedent("""
    import signal
    from tests.support.clusternet import ClusterNet
    from tests.support.netpair import NetPair
    from tests.support.testhosts import TestHosts

    hosts = TestHosts(2)
    net = ClusterNet(hosts)
    pair = NetPair()
    print(*[h.ns for h in hosts], net.switch, pair.switch, pair.a.ns, pair.b.ns, flush=True)
    print(*[h.sshd.pid for h in hosts], flush=True)
    signal.pause()
""")


def test_sigterm_tears_down_every_helpers_namespaces_and_the_run_dies_of_it():
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        names = holder.stdout.readline().split()
        sshds = [int(p) for p in holder.stdout.readline().split()]
        assert len(names) == 6 and len(sshds) == 2, "the holder did not make its hosts"
        assert set(names) <= set(netns.namespaces("sfc-"))
        holder.send_signal(signal.SIGTERM)
        assert holder.wait(timeout=120) == -signal.SIGTERM
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert not set(names) & set(netns.namespaces("sfc-"))
    assert not [pid for pid in sshds if netns.alive(pid)]


@pytest.mark.parametrize("module", [testhosts, netpair, clusternet])
def test_a_killed_runs_namespaces_go_and_a_live_runs_stay(module):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, live = f"{module.PREFIX}{dead.pid}-x1", f"{module.PREFIX}{os.getpid()}-x1"
    for ns in (stale, live):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        removed = module.remove_leftovers()
        assert stale in removed and live not in removed
        assert live in netns.namespaces(module.PREFIX) and stale not in netns.namespaces(module.PREFIX)
    finally:
        for ns in (stale, live):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
