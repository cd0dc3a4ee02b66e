"""Losing the coordinator never ends a capture: hosts go on recording after it is
SIGKILLed, end on their own triggers, and ``cluster gather`` bundles them later."""

from __future__ import annotations

import json
import os
import signal

from tests.support.cluster import Cluster, bundle_path, cluster_json
from tests.support.helpers import wait_for
from tests.support.testhosts import testhosts  # noqa: F401  (the fixture)


def _status(c: Cluster, node: str) -> dict:
    r = c.hosts.ssh(node, "scoutfs-collect cluster node-status")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_coordinator_sigkilled_hosts_keep_recording_then_gather(testhosts, tmp_path):  # noqa: F811
    c = Cluster(testhosts(2), tmp_path)
    try:
        proc = c.start()
        c.wait_event("armed", proc)
        os.killpg(proc.pid, signal.SIGKILL)  # the admin node is gone, its ssh clients too
        proc.wait()
        for node in ("th1", "th2"):
            assert _status(c, node)["running"] is True
        # Still recording: gather now bundles no archive of a running host.
        early = c.run(c.gather_argv())
        assert early.returncode == 1, early.stderr
        doc = cluster_json(bundle_path(early.stdout))
        assert all(n["status"] == "failed" and "still recording" in n["error"]
                   for n in doc["nodes"].values())
        c.fire("th1")
        c.fire("th2")
        wait_for(lambda: not any(_status(c, n)["running"] for n in ("th1", "th2")), 60,
                 "both hosts to end on their own triggers")
        r = c.run(c.gather_argv())
        assert r.returncode == 0, r.stderr
        doc = cluster_json(bundle_path(r.stdout))
        for name, node in doc["nodes"].items():
            assert node["status"] == "ok" and node["archive"].startswith(f"nodes/{name}/")
            # Each ended on its own line: the dead coordinator stopped nobody.
            assert node["trigger"]["type"] == "kmsg"
            assert node["trigger"]["reason"] == f"freeze-{name}-{c.hosts.token}"
        assert doc["origin"]["node"] in ("th1", "th2") and doc["origin"]["type"] == "kmsg"
        assert [e["event"] for e in c.event_list()].count("bundle") == 2
    finally:
        c.kill_all()
