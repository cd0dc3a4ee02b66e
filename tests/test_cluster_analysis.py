"""The analysis of a REAL cluster bundle: 3 test hosts (network namespaces with their own
sshd) ran ``scoutfs-collect cluster``, th2's kmsg trigger stopped all three, the
coordinator gathered the bundle (the session fixture ``triggered_cluster``, shared with
tests/test_cluster.py). What a support engineer checks on it: ``inspect --timeline``
tags every line with its node and source, in time order, node clocks aligned by
cluster.json's ``clock_offset_ms``, the origin's trigger line just before 0 on th2;
``--json`` has every node; ``report`` lanes per node and source with each node's stop
relative to the origin's trigger (rendered by chromium); the Perfetto export one track
per node and source.

The hosts share one kernel, so the origin's trigger line (written once to /dev/kmsg) is
in every node's kernel log and ftrace ring: one instant seen through three nodes.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from tests.support.browser import check_report
from tests.support.cluster import TriggeredRun, cluster_json

NODES = ("th1", "th2", "th3")
SOURCES = ("dmesg", "ftrace")


def scoutfs_collect(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scoutfs_collect", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, stdin=subprocess.DEVNULL)


class Bundle:
    """The real bundle, its cluster.json, and each node's archive copied out of it."""

    def __init__(self, run: TriggeredRun, tmp: Path) -> None:
        assert run.status == 0, run.err
        self.path, self.tmp, self.origin = run.bundle, tmp, run.origin
        self.line = f"freeze-{run.origin}-{run.cluster.hosts.token}"  # the origin's trigger line
        self.doc = cluster_json(self.path)
        self.archives: Dict[str, Path] = {}
        with tarfile.open(self.path) as tar:
            top = tar.getnames()[0].split("/")[0]
            for node, rec in self.doc["nodes"].items():
                out = tmp / node / Path(rec["archive"]).name
                out.parent.mkdir()
                out.write_bytes(tar.extractfile(f"{top}/{rec['archive']}").read())
                self.archives[node] = out

    def run(self, *args: str) -> subprocess.CompletedProcess:
        result = scoutfs_collect(*args, cwd=self.tmp)
        assert result.returncode == 0, result.stderr
        return result

    def timeline(self, path: Path, *args: str) -> dict:
        return json.loads(self.run("inspect", str(path), "--timeline", "--json", *args).stdout)

    def offset_s(self, node: str) -> float:
        return self.doc["nodes"][node]["clock_offset_ms"] / 1000

    def clock_error_ms(self, node: str) -> float:
        """How far the node's offset estimate may be off (cluster.json's ``clock_error_ms``)."""
        return self.doc["nodes"][node]["clock_error_ms"]

    def reference(self) -> float:
        """The origin's trigger on the coordinator's clock: what relative times count from."""
        return self.doc["origin"]["time"] - self.offset_s(self.origin)


@pytest.fixture(scope="module")
def bundle(triggered_cluster, tmp_path_factory) -> Bundle:
    return Bundle(triggered_cluster, tmp_path_factory.mktemp("bundle-analysis"))


def _trigger_lines(events: List[dict], line: str, source: str = "dmesg") -> Dict[str, dict]:
    found = [e for e in events if e["source"] == source and e["text"] == line]
    by_node = {e["node"]: e for e in found}
    assert len(by_node) == len(found), found  # once per node
    return by_node


def test_timeline_tags_every_node_in_time_order_with_aligned_clocks(bundle):
    doc = bundle.timeline(bundle.path)
    assert doc["bundle"] is True
    events = doc["events"]
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)
    assert {(e["node"], e["source"]) for e in events} == {(n, s) for n in NODES for s in SOURCES}
    assert doc["trigger"]["time"] == pytest.approx(bundle.reference(), abs=1e-6)
    for node in NODES:
        assert doc["clocks"][node]["node_offset"] == pytest.approx(bundle.offset_s(node), abs=1e-9)
    assert {(s["node"], s["name"]) for s in doc["sources"]} == {(n, s) for n in NODES for s in SOURCES}
    # The one kernel line, in each node's kernel log: in the bundle it is where the node's
    # own archive puts it, less that node's clock_offset_ms.
    seen = _trigger_lines(events, bundle.line)
    assert set(seen) == set(NODES)
    for node in NODES:
        own = _trigger_lines(bundle.timeline(bundle.archives[node], "--sources", "kmsg")["events"],
                             bundle.line)[""]
        assert seen[node]["time"] == pytest.approx(own["time"] - bundle.offset_s(node), abs=2.5e-6)
        if node == bundle.origin:  # the origin's own archive counts from the same trigger
            assert seen[node]["rel"] == pytest.approx(own["rel"], abs=2.5e-6)
    # The origin's trigger line comes just before the trigger it fired (in the default window).
    assert -2.0 <= seen[bundle.origin]["rel"] < 0.001, seen[bundle.origin]


def test_timeline_text_lines_carry_node_and_source(bundle):
    text = bundle.run("inspect", str(bundle.path), "--timeline").stdout
    for node in NODES:
        assert f"  {node}: clocks from manifest" in text
    rows = [line.split(None, 3) for line in text.splitlines() if line[:4].isdigit()]
    assert rows and [float(r[1]) for r in rows] == sorted(float(r[1]) for r in rows)
    assert {r[2] for r in rows} == {f"{n}/{s}" for n in NODES for s in SOURCES}
    trigger = [r for r in rows if r[2] == f"{bundle.origin}/dmesg" and r[3] == bundle.line]
    assert len(trigger) == 1 and -2.0 <= float(trigger[0][1]) < 0.001, trigger
    assert trigger[0][0].endswith("Z") and len(trigger[0][1].split(".")[1]) == 6


def _stop_labels(dom: str) -> Dict[str, float]:
    """``stop th1 +3.3 ms`` of each node's stop line in the report's DOM, in ms."""
    out = {}
    for part in dom.split('class="stopline" data-node="')[1:]:
        node = part.split('"', 1)[0]
        label = part.split("</text>", 1)[0].rsplit(">", 1)[1]
        assert label.startswith(f"stop {node} ") and label.endswith(" ms"), label
        out[node] = float(label.split()[2])
    return out


def test_report_lanes_per_node_and_source_and_each_stop_after_the_origin_trigger(bundle):
    html = bundle.tmp / "x.html"
    shown = bundle.run("report", str(bundle.path), "-o", str(html))
    assert shown.stdout.strip() == f"report: {html}"
    dom = check_report(bundle.tmp, html, {f"{n}/{s}" for n in NODES for s in SOURCES})
    assert f"origin <b>{bundle.origin}</b>" in dom and bundle.line in dom
    stops = _stop_labels(dom)
    assert set(stops) == set(NODES)
    for node in NODES:  # each node's stop, on its clock less its offset, after the origin's trigger
        stopped = json.loads(bundle.run("inspect", "--json", str(bundle.archives[node])).stdout)
        expected = (stopped["times"]["stopped"] - bundle.offset_s(node) - bundle.reference()) * 1000
        assert stops[node] == pytest.approx(expected, abs=0.051), node
        # after the trigger, to within the two offset estimates' errors (the test hosts share
        # one clock: a peer stopped a few ms after the trigger can read -1 ms on a loaded host)
        assert stops[node] >= -(bundle.clock_error_ms(node) + bundle.clock_error_ms(bundle.origin)), node
        lag = bundle.doc["nodes"][node]["stop_lag_ms"]  # and cluster.json's figure, in the table
        assert f"<td>{node}</td><td>ok</td>" in dom and f"<td>{lag:.1f} ms</td>" in dom


def test_report_of_a_bundle_leaves_nothing_in_tmpdir(bundle, tmp_path):
    """The report's two processes (timeline, findings) share one copy of the node archives
    and remove it, and their spools, when done."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    html = tmp_path / "r.html"
    argv = [sys.executable, "-m", "scoutfs_collect", "report", str(bundle.path), "-o", str(html)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            stdin=subprocess.DEVNULL, env=dict(os.environ, TMPDIR=str(tmpdir)))
    assert result.returncode == 0, result.stderr
    assert "<h2>Findings</h2>" in html.read_text()
    assert list(tmpdir.iterdir()) == []


def test_perfetto_export_has_one_track_per_node_and_source(bundle):
    out = bundle.tmp / "f.json"
    bundle.run("inspect", str(bundle.path), "--export", "perfetto", "-o", str(out))
    events = json.loads(out.read_text())["traceEvents"]
    process = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert sorted(process.values()) == list(NODES)
    tracks = {(process[e["pid"]], e["args"]["name"]): (e["pid"], e["tid"])
              for e in events if e["name"] == "thread_name"}
    assert set(tracks) == {(n, f"{s} ({k})") for n in NODES for s, k in zip(SOURCES, ("kmsg", "ftrace"))}
    assert len(set(tracks.values())) == len(tracks)  # one (pid, tid) each
    records = [e for e in events if e["ph"] == "i" and e.get("s") == "t"]
    used = {(e["pid"], e["tid"]) for e in records}
    assert used == set(tracks.values())  # every track has records, and no record is off-track
    stopped = {e["name"] for e in events if e["ph"] == "i" and e.get("s") == "p"}
    assert stopped == {f"{n} stopped" for n in NODES}
    (trigger,) = [e for e in events if e["name"] == "trigger" and e.get("s") == "g"]
    # The origin's trigger line sits on th2's kernel-log track, just before the trigger.
    origin_kmsg = tracks[(bundle.origin, "dmesg (kmsg)")]
    lines = [e for e in records if (e["pid"], e["tid"]) == origin_kmsg and e["args"]["text"] == bundle.line]
    assert len(lines) == 1 and trigger["ts"] - 2e6 <= lines[0]["ts"] < trigger["ts"] + 1000


def derived(bundle: Bundle, name: str, change: Callable[[dict], None]) -> Path:
    """The real bundle with its cluster.json changed by ``change`` and only the archives it
    still names. A stand-in for a lost node or an operator's stop: each is a cluster run
    of its own in tests/test_cluster.py (which checks their cluster.json); running them
    again here only to analyse them would double the cluster tests' time."""
    doc = json.loads(json.dumps(bundle.doc))
    change(doc)
    keep = {rec["archive"] for rec in doc["nodes"].values() if rec["archive"]}
    out = bundle.tmp / f"scoutfs-collect-cluster.{name}.tar"
    with tarfile.open(bundle.path) as src, tarfile.open(out, "w") as dst:
        first = src.next()
        assert first is not None
        data = json.dumps(doc).encode()
        info = tarfile.TarInfo(first.name)
        info.size = len(data)
        dst.addfile(info, io.BytesIO(data))
        for member in src:
            if member.name.split("/", 1)[1] in keep:
                dst.addfile(member, src.extractfile(member))
    return out


def _lose_th3(doc: dict) -> None:
    doc["nodes"]["th3"].update(status="lost", archive=None, sha256=None, exit=None, stop_lag_ms=None,
                               clock_offset_ms=None, error="session lost; last heard 'armed'")


def test_a_lost_node_is_named_in_the_timeline_and_the_report(bundle):
    path = derived(bundle, "lost", _lose_th3)
    text = bundle.run("inspect", str(path), "--timeline").stdout
    assert "  th3: no archive in the bundle (lost: session lost; last heard 'armed')" in text
    labels = {line.split()[2] for line in text.splitlines() if line[:4].isdigit()}
    assert labels == {f"{n}/{s}" for n in ("th1", "th2") for s in SOURCES}
    html = bundle.tmp / "lost.html"
    bundle.run("report", str(path), "-o", str(html))
    page = html.read_text()
    lanes = {part.split('"')[1] for part in page.split('class="lane" data-source=')[1:]}
    assert lanes == {f"{n}/{s}" for n in ("th1", "th2") for s in SOURCES}
    assert "<tr><td>th3</td><td>lost</td><td>-</td><td>-</td><td>session lost; last heard &#x27;armed&#x27;" \
        in page


def test_an_operator_stop_counts_from_the_coordinator_clock(bundle):
    def operator(doc: dict) -> None:
        doc["origin"] = {"node": None, "name": "operator", "type": "operator", "reason": "SIGINT",
                         "time": bundle.reference()}  # the coordinator's own clock
    path = derived(bundle, "operator", operator)
    text = bundle.run("inspect", str(path), "--timeline").stdout
    assert "  origin the coordinator: operator (operator): SIGINT" in text
    was = {e["node"]: e["rel"] for e in bundle.timeline(bundle.path)["events"] if e["text"] == bundle.line}
    now = {e["node"]: e["rel"] for e in bundle.timeline(path)["events"] if e["text"] == bundle.line}
    assert now == pytest.approx(was, abs=2.5e-6)  # the same reference instant, found without a node
    html = bundle.tmp / "operator.html"
    bundle.run("report", str(path), "-o", str(html))
    assert "origin <b>the coordinator</b>, trigger operator (operator): SIGINT" in html.read_text()


def test_node_with_timeline_is_refused_in_one_line(bundle):
    result = scoutfs_collect("inspect", str(bundle.path), "--timeline", "--node", "th2", cwd=bundle.tmp)
    assert result.returncode == 2 and "--node" in result.stderr and "--sources" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_inspect_of_a_bundle_whose_node_is_not_an_object_exits_2_naming_it(tmp_path):
    doc = tmp_path / "cluster.json"
    doc.write_text(json.dumps({"format": 1, "nodeset": "th1", "nodes": {"th1": "ok"}}))
    bundle = tmp_path / "scoutfs-collect-cluster.20261203-000000Z.tar"
    with tarfile.open(bundle, "w") as tar:
        tar.add(doc, "scoutfs-collect-cluster.20261203-000000Z/cluster.json")
    for args in (["inspect", str(bundle)], ["inspect", str(bundle), "--timeline"]):
        result = scoutfs_collect(*args, cwd=tmp_path)
        assert result.returncode == 2, result
        assert "cluster.json: nodes.th1 is not an object" in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
