"""Losing the coordinator never ends a capture: hosts go on recording after it is
SIGKILLed, end on their own triggers, and ``cluster gather`` bundles them later. Losing a
node mid-run (powered off) loses no data that reached its disk: ``cluster gather`` packs
the work dir it left once it is back."""

from __future__ import annotations

import json
import os
import signal
import tarfile

from tests.support.cluster import Cluster, bundle_path, cluster_json
from tests.support.helpers import extract, kmsg_write, wait_for
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


def test_gather_packs_the_run_of_a_node_powered_off_mid_run(testhosts, tmp_path):  # noqa: F811
    """th2 is powered off mid-run (every process in it SIGKILLed, as the fence agent's
    power-off leaves it: a work dir and no archive) and booted again (sshd back, /run
    empty, so only the output dir tells where its run was): ``cluster gather`` packs that
    work dir on th2 and bundles it, recorded as recovered, with what th2 logged before."""
    c = Cluster(testhosts(2), tmp_path)
    try:
        proc = c.start()
        c.wait_event("armed", proc)
        last_words = f"th2-last-words-{c.hosts.token}"
        kmsg_write(last_words)
        out = c.hosts["th2"].output
        wait_for(lambda: any(last_words in p.read_text(errors="replace")
                             for p in out.glob("scoutfs-collect.*/dmesg/*") if p.is_file()),
                 20, "th2's dmesg collector to record the line")
        (workdir,) = [p for p in out.iterdir() if p.is_dir()]
        c.hosts["th2"].kill()
        c.wait_event("error", proc, node="th2")
        c.fire("th1")
        status, stdout, err = c.finish(proc)
        assert status == 1, err
        live = cluster_json(bundle_path(stdout))["nodes"]
        assert live["th2"]["status"] == "lost" and live["th2"]["archive"] is None
        c.hosts.power_on("th2")
        r = c.run(c.gather_argv() + ["--output-dir", str(c.hosts.dir / "out" / "%h")])
        assert r.returncode == 0, r.stdout + r.stderr
        bundle = bundle_path(r.stdout)
        nodes = cluster_json(bundle)["nodes"]
        th2 = nodes["th2"]
        assert th2["status"] == "ok" and th2["archive"] == f"nodes/th2/{workdir.name}.tar.zst"
        assert th2["recovered"]["by"] == "cluster gather" and th2["recovered"]["workdir"] == str(workdir)
        assert th2["recovered"]["note"].startswith("the run did not finish")
        assert th2["trigger"] is None and th2["exit"] is None  # killed while it waited
        assert nodes["th1"]["recovered"] is None and nodes["th1"]["trigger"]["type"] == "kmsg"
        with tarfile.open(bundle) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(th2["archive"]))
            (tmp_path / "th2.tar.zst").write_bytes(tar.extractfile(member).read())
        top = extract(tmp_path / "th2.tar.zst", tmp_path / "th2")
        manifest = json.loads((top / "manifest.json").read_text())
        assert manifest["result"]["complete"] is False
        assert any(last_words in p.read_text(errors="replace") for p in (top / "dmesg").iterdir())
        assert "node_packed" in [e["event"] for e in c.event_list()]
    finally:
        c.kill_all()
