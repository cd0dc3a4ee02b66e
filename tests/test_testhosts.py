"""The cluster tests' hosts: reachable by ssh, each with its own hostname and lock dir,
and nothing of them left behind (also after a killed earlier run)."""

from __future__ import annotations

import subprocess

from tests.support import testhosts as th
from tests.support.testhosts import TestHosts, testhosts  # noqa: F401  (the fixture)


def test_each_host_has_its_own_name_and_runtime_dir(testhosts):  # noqa: F811
    hosts = testhosts(2)
    for host in hosts:
        r = hosts.ssh(host.name, "hostname; echo $SCOUTFS_COLLECT_RUNTIME; command -v scoutfs-collect")
        assert r.returncode == 0, r.stderr
        name, runtime, exe = r.stdout.split()
        assert (name, runtime) == (host.name, str(host.runtime))
        assert exe.startswith(str(hosts.venv_bin))


def test_close_removes_namespaces_and_sshd():
    hosts = TestHosts(1)
    ns, sshd = hosts["th1"].ns, hosts["th1"].sshd
    assert ns in th.namespaces()
    hosts.close()
    assert ns not in th.namespaces()
    assert sshd is not None and sshd.poll() is not None
    assert not hosts.dir.exists()


def test_leftovers_of_a_dead_run_are_removed_and_a_live_runs_kept():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{th.PREFIX}{dead.pid}-1"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    hosts = TestHosts(1)  # its set-up removes what dead runs left
    try:
        assert stale not in th.namespaces()
        assert th.remove_leftovers() == []  # our own (live) namespace stays
        assert hosts["th1"].ns in th.namespaces()
    finally:
        hosts.close()
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True)
