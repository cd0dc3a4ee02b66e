"""``scoutfs-collect cluster`` through the real CLI against test hosts (network namespaces
with their own sshd, tests/support/testhosts.py): a trigger on one host stops them all,
an unreachable host, a host lost mid-run, Ctrl-C on the coordinator."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import tarfile

import psutil
import pytest

from scoutfs_collect import __version__
from tests.support.cluster import Cluster, bundle_path, cluster_json, members
from tests.support.testhosts import testhosts  # noqa: F401  (the fixture)


@pytest.fixture
def cluster(testhosts, tmp_path):  # noqa: F811
    made = []

    def make(count: int, ftrace: bool = False) -> Cluster:
        c = Cluster(testhosts(count), tmp_path, ftrace=ftrace)
        made.append(c)
        return c

    yield make
    for c in made:
        c.kill_all()


def test_trigger_on_one_host_stops_all_three_into_one_bundle(triggered_cluster):
    c, run = triggered_cluster.cluster, triggered_cluster
    assert run.status == 0, run.err
    bundle = run.bundle
    assert bundle.parent == c.tmp and bundle.name.startswith("scoutfs-collect-cluster.")
    assert bundle.name.endswith("Z.tar")
    doc = cluster_json(bundle)
    assert doc["format"] == 1 and doc["nodeset"] == "th[1-3]"
    origin_reason = f"freeze-th2-{c.hosts.token}"
    assert doc["origin"]["node"] == "th2" and doc["origin"]["type"] == "kmsg"
    assert doc["origin"]["reason"] == origin_reason
    nodes = doc["nodes"]
    assert set(nodes) == {"th1", "th2", "th3"}
    assert nodes["th2"]["trigger"]["type"] == "kmsg"
    for peer in ("th1", "th3"):
        assert nodes[peer]["trigger"]["type"] == "peer"
        assert nodes[peer]["trigger"]["reason"] == f"th2 triggered freeze (kmsg): {origin_reason}"
    inside = members(bundle)
    for name, node in nodes.items():
        assert node["status"] == "ok" and node["exit"] == 0
        assert node["archive"].startswith(f"nodes/{name}/scoutfs-collect.{name}.")
        assert inside[node["archive"]] > 0
        assert node["clock_offset_ms"] is not None and node["clock_error_ms"] is not None
        # after the origin's trigger, to within the two offset estimates' errors (the hosts
        # share one clock, the estimates each carry up to half a round trip of error)
        slack = node["clock_error_ms"] + nodes["th2"]["clock_error_ms"]
        assert node["stop_lag_ms"] is not None and node["stop_lag_ms"] >= -slack, (name, node, slack)
    with tarfile.open(bundle) as tar:
        top = tar.getnames()[0].split("/")[0]
        for node in nodes.values():
            data = tar.extractfile(f"{top}/{node['archive']}").read()
            assert hashlib.sha256(data).hexdigest() == node["sha256"]
    names = [e["event"] for e in c.event_list()]
    assert names.count("node_armed") == 3 and names.count("node_stopped") == 3
    assert names.count("node_archive") == 3
    assert names.index("armed") < names.index("triggered") < names.index("bundle") < names.index("finished")
    # Every host gave its tracefs instance back (looked at as soon as the run ended).
    assert run.instances_left == {name: False for name in nodes}
    # inspect: the bundle's table, and one node's archive.
    shown = subprocess.run([*c.argv()[:3], "inspect", str(bundle)], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "origin     th2: freeze (kmsg)" in shown.stdout
    for name in nodes:
        assert any(line.startswith(name) and " ok " in line for line in shown.stdout.splitlines())
    one = subprocess.run([*c.argv()[:3], "inspect", str(bundle), "--node", "th3"],
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    assert "Host      th3" in one.stdout and "peer (type peer)" in one.stdout
    bad = subprocess.run([*c.argv()[:3], "inspect", str(bundle), "--node", "th9"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "th9" in bad.stdout + bad.stderr


def test_unreachable_host_starts_nothing_and_allow_missing_records_it(cluster):
    c = cluster(3)
    c.hosts["th3"].kill()  # its sshd is gone
    r = c.run(c.argv())
    assert r.returncode == 2, r.stderr
    assert "th3 (1)" in r.stderr and "unreachable" in r.stderr
    assert "nothing was started" in r.stderr
    for name in ("th1", "th2"):  # nothing started anywhere: no work dir, no lock taken
        assert list(c.hosts[name].output.iterdir()) == []
        assert not (c.hosts[name].runtime / "lock").exists()
    proc = c.start("--allow-missing")
    c.wait_event("armed", proc)
    c.fire("th1")
    status, out, err = c.finish(proc)
    assert status == 1, err
    nodes = cluster_json(bundle_path(out))["nodes"]
    assert nodes["th3"]["status"] == "missing" and "unreachable" in nodes["th3"]["error"]
    assert nodes["th3"]["archive"] is None
    assert nodes["th1"]["trigger"]["type"] == "kmsg" and nodes["th2"]["trigger"]["type"] == "peer"
    assert nodes["th1"]["status"] == nodes["th2"]["status"] == "ok"


def test_host_killed_mid_run_is_lost_and_the_others_go_on(cluster):
    c = cluster(3)
    proc = c.start()
    c.wait_event("armed", proc)
    c.hosts["th3"].kill()  # powered off: sshd and its scoutfs-collect gone
    c.wait_event("error", proc, node="th3")
    c.fire("th1")
    status, out, err = c.finish(proc)
    assert status == 1, err
    nodes = cluster_json(bundle_path(out))["nodes"]
    assert nodes["th3"]["status"] == "lost" and "last heard" in nodes["th3"]["error"]
    assert nodes["th1"]["status"] == nodes["th2"]["status"] == "ok"
    assert nodes["th2"]["trigger"]["type"] == "peer"


def test_ctrl_c_on_the_coordinator_stops_every_host_and_writes_the_bundle(cluster):
    c = cluster(2)
    proc = c.start()
    c.wait_event("armed", proc)
    proc.send_signal(signal.SIGINT)
    status, out, err = c.finish(proc)
    assert status == 0, err
    doc = cluster_json(bundle_path(out))
    assert doc["origin"]["type"] == "operator" and doc["origin"]["node"] is None
    assert "SIGINT" in doc["origin"]["reason"]
    for node in doc["nodes"].values():
        assert node["status"] == "ok" and node["trigger"]["type"] == "operator"


def test_check_reports_grouped_by_node_and_a_version_mismatch(cluster):
    c = cluster(3)
    r = c.run([*c.argv()[:4], "check", *c.argv()[4:]])
    assert r.returncode == 0, r.stderr
    assert f"th[1-3] (3)\n  ready (scoutfs-collect {__version__})" in r.stderr
    # th2 has another release installed (a stand-in script: no older release of
    # scoutfs-collect can be installed here without a network).
    fake = c.hosts["th2"].bin / "scoutfs-collect"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "scoutfs-collect 0.0.1"; exit 0; }\n'
                    f'exec {c.hosts.venv_bin}/scoutfs-collect "$@"\n')
    fake.chmod(0o755)
    r = c.run([*c.argv()[:4], "check", *c.argv()[4:]])
    assert r.returncode == 2
    assert "th2 (1)" in r.stderr and f"scoutfs-collect 0.0.1 there, {__version__} here" in r.stderr
    assert "th[1,3] (2)" in r.stderr
    r = c.run(c.argv())
    assert r.returncode == 2 and "nothing was started" in r.stderr
    assert list(c.hosts["th1"].output.iterdir()) == []


def test_tree_mode_through_one_gateway(cluster):
    c = cluster(2)
    c.use_gateway()
    proc = c.start()
    c.wait_event("armed", proc)
    gateway_procs = [p for p in psutil.Process(c.gateway.sshd.pid).children(recursive=True)
                     if "ClusterShell.Gateway" in " ".join(p.cmdline())]
    assert gateway_procs, "the sessions do not go through the gateway"
    c.fire("th1")
    status, out, err = c.finish(proc)
    assert status == 0, err
    assert "tree mode" in err
    doc = cluster_json(bundle_path(out))
    assert doc["origin"]["node"] == "th1"
    assert doc["nodes"]["th2"]["trigger"]["type"] == "peer"
    inside = members(bundle_path(out))
    for name, node in doc["nodes"].items():
        assert node["status"] == "ok" and inside[node["archive"]] > 0
        assert node["archive"].startswith(f"nodes/{name}/scoutfs-collect.{name}.")


@pytest.mark.parametrize("args, message", [
    (["-w", "th[1-", "127.0.0.1", "7000"], "missing bracket"),
    (["-w", "th1", "--bundle-dir", "/nonexistent/x", "127.0.0.1", "7000"], "--bundle-dir"),
    (["-w", "th1", "127.0.0.1", "70000"], "PORT"),
    (["127.0.0.1", "7000"], "-w"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, args, message):
    r = subprocess.run([sys.executable, "-m", "scoutfs_collect", "cluster", *args], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
