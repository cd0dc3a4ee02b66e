"""``inspect --findings``: real captures (dmesg, sysinfo, scoutfs counters of the sysfs
fixture) during which kernel lines are written into /dev/kmsg in the exact formats of the
kernel and scoutfs sources (each named below), ending on a real fencing line that fires
the kmsg trigger; then the verdict, the findings and the skipped analyzers, as a support
engineer reads them. The machine's older kernel log (read at start) is never a finding."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import socket
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import List, Optional

import psutil
import pytest

from scoutfs_collect import AnalysisContext, Record
from scoutfs_collect.archive.read import open_stream, read_manifest
from scoutfs_collect.builtin_plugins.analyzers.memory import Memory
from scoutfs_collect.core import registry
from scoutfs_collect.demo import fixture
from tests.support.cli import Cli, finish
from tests.support.helpers import archive_of, kmsg_write, wait_for

# kernel/hung_task.c: "INFO: task %s:%d blocked for more than %ld seconds."
HUNG = "INFO: task kworker/u8:2:4711 blocked for more than 120 seconds."
# kernel/watchdog.c (pr_fmt "watchdog: "): "BUG: soft lockup - CPU#%d stuck for %us! [%s:%d]"
LOCKUP = "watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [scoutfs_net:812]"
# mm/oom_kill.c: "%s: Killed process %d (%s) total-vm:%lukB, anon-rss:%lukB, ..."
OOM = ("Out of memory: Killed process 4242 (stress) total-vm:8388608kB, anon-rss:8000000kB, "
       "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:16000kB oom_score_adj:0")
# net/sched/sch_generic.c dev_watchdog(): "NETDEV WATCHDOG: %s (%s): transmit queue %u timed out"
NETDEV = "NETDEV WATCHDOG: eth7 (mlx5_core): transmit queue 3 timed out"
# drivers/net/phy/phy.c phy_print_status(), through netdev_info: "<dev>: Link is Up - ..."
LINK_UP = "igb 0000:03:00.0 eth7: Link is Up - 10Gbps/Full - flow control rx/tx"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reconnect_line(ip: str, port: int) -> str:
    """scoutfs net.c: ``client SIN_FMT reconnect timed out, fencing`` (scoutfs_info prefix)."""
    return f"scoutfs f.5c0a11.r.00c0de: client {ip}:{port} reconnect timed out, fencing"


def _series(run: Path) -> List[List[str]]:
    """The rows of the running capture's counter series (utc, elapsed_s, mount, counter, value, change)."""
    path = next(run.glob("scoutfs-collect.*/scoutfs-counters/counters-series.csv"), None)
    if path is None:
        return []
    with open(path, newline="") as f:
        return [r for r in csv.reader(f) if len(r) >= 6 and r[1] != "elapsed_s"]


def _series_elapsed(run: Path) -> float:
    return max((float(r[1]) for r in _series(run)), default=0.0)


def capture(tmp: Path, lines: List[str], fence: Optional[str], pattern: str,
            collectors: str = "dmesg, sysinfo, counters", bump: Optional[dict] = None) -> str:
    """One real run: ``lines`` written into /dev/kmsg while it records, then the ``fence``
    line (which fires the trigger on ``pattern``), or a timer trigger when None."""
    cli = Cli(tmp)
    (mount,) = fixture.build(tmp / "sysfs", mounts=1)
    col = {"dmesg": "  dmesg: {}\n", "sysinfo": "  sysinfo: {}\n",
           "counters": f"  scoutfs-counters: {{sysfs_root: {tmp / 'sysfs'}, interval: 0.2}}\n"}
    text = "collectors:\n" + "".join(col[c.strip()] for c in collectors.split(","))
    text += (f"triggers:\n  fencing: {{type: kmsg, pattern: '{pattern}'}}\n" if fence else
             "triggers:\n  t: {type: timer, after: 0.3}\n")
    proc = cli.start("--profile", str(cli.profile(text)), "--output-dir", str(cli.out),
                     "--events-file", str(cli.events), "127.0.0.1", str(_port()))
    try:
        cli.wait_event("armed", proc)
        if bump:  # a baseline of counter samples, then the counters move, then the fence
            def traffic() -> bool:  # the series has rows only for counters that move
                fixture.bump(mount, "lock_lock", 1)
                return _series_elapsed(cli.out) >= 3.5
            wait_for(traffic, 30, "3.5 s of counter series")
            want = {(name, str(fixture.bump(mount, name, by))) for name, by in bump.items()}
            wait_for(lambda: want <= {(r[3], r[4]) for r in _series(cli.out)}, 30,
                     "the bumped values sampled")
        for line in lines:
            kmsg_write(line, 3)
        if fence:
            kmsg_write(fence)
        code, out, err = finish(proc)
        assert code == 0, err
    finally:
        cli.cleanup()
    return archive_of(out)


def _cli(tmp: Path) -> Cli:
    """A Cli of its own (its own lock and config dirs) below ``tmp``."""
    return Cli(Path(tempfile.mkdtemp(prefix="q.", dir=tmp)))


def findings(tmp: Path, archive: str, *extra: str) -> dict:
    result = _cli(tmp).run("inspect", archive, "--findings", "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def keys(doc: dict) -> set:
    return {f["key"] for f in doc["findings"]}


def plugin_dir(tmp: Path, name: str, text: str) -> Path:
    """A site plugin directory holding ``name`` with ``text``, with the modes the loader
    requires (not writable by others)."""
    d = tmp / "plugins.d"
    d.mkdir(mode=0o755)
    (d / name).write_text(text)
    os.chmod(d, 0o755)
    os.chmod(d / name, 0o644)
    return d


@pytest.fixture(scope="module")
def stall(tmp_path_factory):
    """Hung task and soft lockup on the node, then the server's fencing line naming a
    mount of this same node (127.0.0.1: its mounts talk over lo, one kernel log)."""
    tmp = tmp_path_factory.mktemp("stall")
    port = _port()
    fence = reconnect_line("127.0.0.1", port)
    return tmp, capture(tmp, [HUNG, LOCKUP, "stor-agent: heartbeat missed (3 s)"], fence,
                        f"client 127.0.0.1:{port} reconnect timed out, fencing")


def test_a_hung_task_on_the_victim_before_the_fence_is_a_node_stall(stall):
    tmp, archive = stall
    doc = findings(tmp, archive)
    assert doc["format"] == 1 and set(doc) == {"format", "verdict", "findings", "skipped"}
    v = doc["verdict"]
    assert v["category"] == "node-stall"
    assert {"kernel.hung_task", "kernel.soft_lockup", "fence.client_reconnect"} <= set(v["keys"])
    by = {f["key"]: f for f in doc["findings"]}
    fence = by["fence.client_reconnect"]
    assert fence["category"] == "fence" and fence["severity"] == "error"
    assert fence["details"]["path"] == "client_reconnect" and fence["details"]["victim_ip"] == "127.0.0.1"
    assert fence["details"]["victim_node"] == fence["node"] == fence["details"]["logged_by"]
    assert abs(fence["relative"]) < 1.0  # the fencing line is the trigger
    hung = by["kernel.hung_task"]
    assert hung["evidence"][0]["text"] == HUNG and hung["relative"] < 0
    assert "kworker/u8:2:4711" in hung["summary"] and hung["category"] == "node-stall"
    assert by["kernel.soft_lockup"]["summary"].startswith("soft lockup: CPU#1 stuck for 23 s")
    for f in doc["findings"]:
        assert set(f) >= {"key", "severity", "category", "node", "time", "relative", "summary", "evidence"}
    assert {"clock"} <= {s["analyzer"] for s in doc["skipped"]}
    assert "bundle" in next(s["reason"] for s in doc["skipped"] if s["analyzer"] == "clock")
    # a run of seconds: neither the counters nor the kernel lines judged reach back over
    # the 44 s before a reconnect fence
    short = {f["details"]["source"]: f["summary"] for f in doc["findings"] if f["key"] == "coverage.short"}
    assert "44 s before the trigger (client_reconnect)" in short["scoutfs-counters"]
    assert "older kernel lines (the ring read at start) are kept but not judged" in short["dmesg"]


def test_findings_text_names_the_verdict_and_the_evidence(stall):
    tmp, archive = stall
    result = _cli(tmp).run("inspect", archive, "--findings")
    assert result.returncode == 0, result.stderr
    assert "Verdict: node-stall:" in result.stdout
    assert HUNG in result.stdout and "kernel.soft_lockup" in result.stdout
    assert "clock: not a cluster bundle" in result.stdout


def test_the_report_starts_with_the_findings(stall):
    tmp, archive = stall
    html = tmp / "r.html"
    result = _cli(tmp).run("report", archive, "-o", str(html))
    assert result.returncode == 0, result.stderr
    text = html.read_text()
    assert text.index("<h2>Findings</h2>") < text.index("<h2>Timeline")
    assert "Verdict: node-stall" in text and "kernel.hung_task" in text


# A site analyzer breaking the documented rule that ``details`` are JSON-able facts: its
# finding holds a lock, which pickle cannot carry out of the report's findings process.
LOCK_HOLDER = '''
import threading

from scoutfs_collect import Analyzer, Finding, hookimpl


class LockHolder(Analyzer):
    type_name = "lock-holder"
    sources = ("kmsg",)

    def finish(self):
        yield Finding("site.lock_holder", "info", "capture", "a finding holding a lock",
                      "this node", None, (), {"lock": threading.Lock()})


@hookimpl
def scoutfs_collect_register(register):
    register.add_analyzer(LockHolder)
'''


def test_the_report_keeps_a_finding_its_findings_process_cannot_send_back(stall, tmp_path):
    """The report's analyzers run in a process of their own beside the timeline's reader;
    a result that cannot travel back is computed again in the report's own process."""
    _, archive = stall
    d = plugin_dir(tmp_path, "lock_holder.py", LOCK_HOLDER)
    html = tmp_path / "r.html"
    result = _cli(tmp_path).run("report", archive, "-o", str(html), "--plugin-dir", str(d))
    assert result.returncode == 0, result.stderr
    text = html.read_text()
    assert "site.lock_holder" in text and "Verdict: node-stall" in text


# A site analyzer that blocks on a FIFO nobody writes to: the report's findings process is
# busy (as on a large archive) when the report itself is interrupted.
BLOCKER = '''
import os

from scoutfs_collect import Analyzer, hookimpl


class Blocker(Analyzer):
    type_name = "blocker"
    sources = ("kmsg",)

    def record(self, rec):
        with open(os.environ["BLOCKER_FIFO"]) as f:
            f.read()


@hookimpl
def scoutfs_collect_register(register):
    register.add_analyzer(Blocker)
'''


def test_an_interrupted_report_leaves_no_process_and_no_temporary_file(stall, tmp_path):
    """Ctrl-C while the findings process is still reading: it is ended (it unwinds on
    SIGTERM), and both processes' temporary directories are gone."""
    _, archive = stall
    d = plugin_dir(tmp_path, "blocker.py", BLOCKER)
    fifo, tmpdir = tmp_path / "fifo", tmp_path / "tmp"
    os.mkfifo(fifo)
    tmpdir.mkdir()
    cli = _cli(tmp_path)
    env = dict(cli.env, BLOCKER_FIFO=str(fifo), TMPDIR=str(tmpdir))
    argv = cli.argv("report", archive, "-o", str(tmp_path / "r.html"), "--plugin-dir", str(d))
    proc = subprocess.Popen(argv, env=env, cwd=cli.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    writer = None
    try:
        def blocked() -> bool:  # the findings process has the FIFO open for reading
            nonlocal writer
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                return proc.poll() is not None
            return True
        wait_for(blocked, 60, "the findings process reading the FIFO")
        assert proc.poll() is None, proc.communicate()
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        code, _, err = finish(proc, timeout=60)
    finally:
        if writer is not None:
            os.close(writer)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code != 0 and "Traceback" not in err
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert list(tmpdir.iterdir()) == []
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("lines, category, key", [
    ([OOM], "memory", "kernel.oom_kill"),
    ([NETDEV, LINK_UP], "network", "kernel.netdev_watchdog"),
])
def test_each_rule_of_the_victims_kernel_log(tmp_path, lines, category, key):
    port = _port()
    archive = capture(tmp_path, lines, reconnect_line("127.0.0.1", port),
                      f"client 127.0.0.1:{port} reconnect timed out, fencing")
    doc = findings(tmp_path, archive)
    assert doc["verdict"]["category"] == category, doc["verdict"]
    assert key in doc["verdict"]["keys"]
    assert next(f for f in doc["findings"] if f["key"] == key)["evidence"][0]["text"] == lines[0]


def test_the_same_stall_is_undetermined_without_the_victims_archive(tmp_path):
    """The fence names an address no node of the input has: its log is not here."""
    port, ip = _port(), f"10.254.{random.randint(0, 255)}.{random.randint(1, 254)}"
    archive = capture(tmp_path, [HUNG], reconnect_line(ip, port),
                      f"client {ip}:{port} reconnect timed out, fencing")
    doc = findings(tmp_path, archive)
    v = doc["verdict"]
    assert v["category"] == "undetermined" and v["keys"] == ["fence.client_reconnect"]
    assert any(f"no archive from the victim ({ip}:{port})" in m for m in v["missing"])
    assert "kernel.hung_task" in keys(doc)  # found, but on the server, not the victim
    # in a bundle whose nodes are named by address, the victim is the node that was lost
    doc = findings(tmp_path, str(make_bundle(tmp_path, archive, {"server": 0.0}, ip)))
    fence = next(f for f in doc["findings"] if f["key"] == "fence.client_reconnect")
    assert fence["node"] == "server" and fence["details"]["victim_node"] == ip
    assert doc["verdict"]["missing"] == [f"no archive from the victim ({ip}: lost: no answer for 10 s)"]


def test_a_victim_with_nothing_conclusive_is_undetermined_naming_what_is_missing(tmp_path):
    port = _port()
    archive = capture(tmp_path, [LINK_UP], reconnect_line("127.0.0.1", port),
                      f"client 127.0.0.1:{port} reconnect timed out, fencing")
    doc = findings(tmp_path, archive)
    v = doc["verdict"]
    assert v["category"] == "undetermined", v
    assert any("no packet capture from the victim" in m for m in v["missing"])
    assert "kernel.link_up" in keys(doc)


def test_lock_counters_racing_before_a_recovery_fence_are_a_lock_verdict(tmp_path):
    """server.c: ``%lu ms recovery timeout expired for client rid %016llx, fencing``; the
    victim's rid is in its own scoutfs lines (here: this node's, one kernel log)."""
    rid = f"{random.getrandbits(64):016x}"
    own = f"scoutfs f.5c0a11.r.{rid[:6]}: "
    fence = (f"scoutfs f.5c0a11.r.00c0de error: 30000 ms recovery timeout expired for client rid {rid}, "
             "fencing")
    archive = capture(tmp_path, [own + "client connected 127.0.0.1:40000 -> 127.0.0.1:7001"], fence,
                      f"recovery timeout expired for client rid {rid}, fencing",
                      bump={"lock_invalidate_request": 60, "net_recv_error": 2})
    doc = findings(tmp_path, archive)
    fence_f = next(f for f in doc["findings"] if f["key"] == "fence.client_recovery")
    assert fence_f["details"]["victim_rid"] == rid and fence_f["details"]["timeout_ms"] == 30000
    assert doc["verdict"]["category"] == "lock", doc["verdict"]
    lock = next(f for f in doc["findings"] if f["key"] == "counters.lock")
    assert "lock_invalidate_request +60" in lock["summary"] and "not moving before" in lock["summary"]
    assert "counters.net_errors" in keys(doc)
    assert any("30 s before the trigger (client_recovery)" in f["summary"] for f in doc["findings"]
               if f["key"].startswith("coverage."))


def test_a_quorum_fence_names_the_previous_leader(tmp_path):
    """quorum.c: ``fencing previous leader "SCSBF" at term %llu in slot %u with address "SIN_FMT``."""
    port, ip = _port(), f"10.253.{random.randint(0, 255)}.{random.randint(1, 254)}"
    fence = f"scoutfs f.5c0a11.r.00c0de: fencing previous leader f.5c0a11.r.a1b2c3 at term 7 in slot 2 " \
            f"with address {ip}:{port}"
    archive = capture(tmp_path, [], fence, f"with address {ip}:{port}")
    doc = findings(tmp_path, archive)
    f = next(f for f in doc["findings"] if f["category"] == "fence")
    assert f["key"] == "fence.quorum_block_leader" and f["details"]["victim_ip"] == ip
    assert f["details"]["victim_rid"] == "a1b2c3" and f["summary"].endswith("quorum block leader")
    assert doc["verdict"]["category"] == "undetermined"


@pytest.mark.parametrize("args", [("--timeline",), ("--node", "n1"),
                                  ("--export", "perfetto", "-o", "x.json")])
def test_findings_goes_alone(tmp_path, args):
    result = _cli(tmp_path).run("inspect", str(tmp_path), "--findings", *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--findings goes alone" in result.stderr


def test_an_archive_without_an_incident_says_so_and_skips_what_it_lacks(tmp_path):
    archive = capture(tmp_path, [], None, "", collectors="dmesg")
    result = _cli(tmp_path).run("inspect", archive, "--findings")
    assert result.returncode == 0, result.stderr
    assert "Verdict: undetermined: no fence recorded" in result.stdout
    doc = findings(tmp_path, archive)
    assert doc["verdict"]["category"] == "undetermined" and doc["verdict"]["keys"] == []
    assert not [f for f in doc["findings"] if f["category"] != "capture"]
    skipped = {s["analyzer"]: s["reason"] for s in doc["skipped"]}
    assert "sysinfo" in skipped["memory"] and "scoutfs-counters" in skipped["counters"]
    assert "memory" not in {f["category"] for f in doc["findings"]}


def test_plugins_lists_the_analyzers_with_what_they_read(tmp_path):
    result = Cli(tmp_path).run("plugins", "--json")
    assert result.returncode == 0, result.stderr
    analyzers = {p["type"]: p for p in json.loads(result.stdout) if p["kind"] == "analyzer"}
    assert {"fence", "kernel", "memory", "counters", "clock", "coverage"} <= set(analyzers)
    assert analyzers["fence"]["sources"] == ["kmsg"] and "client_reconnect" in analyzers["fence"]["doc"]


def readme_analyzer() -> str:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Writing a site analyzer", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_site_analyzer_runs_verbatim(stall, tmp_path):
    _, archive = stall
    d = plugin_dir(tmp_path, "stor_agent.py", readme_analyzer())
    doc = findings(tmp_path, archive, "--plugin-dir", str(d))
    site = next(f for f in doc["findings"] if f["key"] == "site.stor_agent")
    assert site["category"] == "node-stall" and site["relative"] < 0
    assert site["evidence"][-1]["text"] == "stor-agent: heartbeat missed (3 s)"
    assert doc["verdict"]["category"] == "node-stall"


def make_bundle(tmp: Path, archive: str, offsets: dict, lost: str) -> Path:
    """A bundle in cluster.json's format from one real archive copied per node of
    ``offsets`` (its clock_offset_ms, None: no estimate; the first is the origin), and
    the node ``lost`` without an archive."""
    top = "scoutfs-collect-cluster.20261206-000000Z"
    name = Path(archive).name
    m = read_manifest(Path(archive))
    origin = next(iter(offsets))
    nodes = {}
    for node, offset in offsets.items():
        nodes[node] = {"status": "ok", "exit": 0, "archive": f"nodes/{node}/{name}", "sha256": "",
                       "trigger": dict(m["trigger"]) if node == origin else None,
                       "stopped": m["times"]["stopped"], "stop_lag_ms": 0.0,
                       "clock_offset_ms": offset, "error": None}
    nodes[lost] = {"status": "lost", "exit": None, "archive": None, "sha256": None, "trigger": None,
                   "stopped": None, "stop_lag_ms": None, "clock_offset_ms": None,
                   "error": "no answer for 10 s"}
    cluster = {"format": 1, "nodeset": ",".join(nodes), "nodes": nodes,
               "origin": {"node": origin, "name": m["trigger"]["name"], "type": m["trigger"]["type"],
                          "reason": m["trigger"]["reason"], "time": m["trigger"]["time"]}}
    doc_path = tmp / "cluster.json"
    doc_path.write_text(json.dumps(cluster))
    bundle = tmp / f"{top}.tar"
    with tarfile.open(bundle, "w") as tar:
        tar.add(doc_path, f"{top}/cluster.json")
        for node in offsets:
            tar.add(archive, f"{top}/nodes/{node}/{name}")
    return bundle


def test_a_bundle_names_its_nodes_their_clocks_and_the_node_without_an_archive(stall, tmp_path):
    """One node 1.5 s off the coordinator, one without an estimate, one lost: the
    victim's address (lo) is every node's, so no node of the bundle is taken for it."""
    _, archive = stall
    bundle = make_bundle(tmp_path, archive, {"node1": 0.0, "node2": 1500.0, "node3": None}, "node4")
    doc = findings(tmp_path, str(bundle))
    by = {(f["key"], f["node"]) for f in doc["findings"]}
    assert {("clock.offset", "node2"), ("clock.unaligned", "node3"), ("coverage.no_archive", "node4")} <= by
    assert ("kernel.hung_task", "node1") in by and ("fence.client_reconnect", "node1") in by
    assert "clock" not in {s["analyzer"] for s in doc["skipped"]}
    v = doc["verdict"]
    assert v["category"] == "undetermined" and any("no archive from the victim" in x for x in v["missing"])


def test_an_analyzer_declaring_an_unknown_source_kind_is_refused_naming_it(tmp_path):
    d = plugin_dir(tmp_path, "bad.py",
                   "from scoutfs_collect import Analyzer, hookimpl\n\n\n"
                   "class Bad(Analyzer):\n    '''Reads the journal.'''\n    type_name = 'bad'\n"
                   "    sources = ('journal',)\n\n\n"
                   "@hookimpl\ndef scoutfs_collect_register(register):\n    register.add_analyzer(Bad)\n")
    reg = registry.load([str(d)])
    assert "bad" not in reg.types
    assert any("unknown source kind 'journal'" in err for _, err in reg.load_errors), reg.load_errors


def test_low_memory_in_a_real_sysinfo_snapshot(stall):
    """The stop snapshot of the real archive with half its memory available, then with
    100 MiB available: what a node short of memory records (not made here for real)."""
    _, archive = stall
    with open_stream(Path(archive)) as tar:
        member = next(m for m in tar if m.name.endswith("sysinfo/sysinfo-stop.json"))
        snap = json.load(tar.extractfile(member))
    ctx = AnalysisContext(float(snap["taken_at"]))
    virtual = snap["memory"]["virtual"]
    virtual["available"], snap["memory"]["swap"]["percent"] = virtual["total"] // 2, 0.0
    plain = Memory(ctx)
    plain.record(Record("vm", "sysinfo", "sysinfo", ctx.trigger, "stop", snap))
    assert [f.key for f in plain.finish()] == []
    snap["memory"]["virtual"]["available"] = 100 << 20
    short = Memory(ctx)
    short.record(Record("vm", "sysinfo", "sysinfo", ctx.trigger, "stop", snap))
    (f,) = short.finish()
    assert f.key == "memory.low" and f.category == "memory"
    assert f.summary.startswith("low MemAvailable: 100.0 MiB of ")


def test_the_readme_site_analyzer_needs_only_the_public_api():
    import ast

    import scoutfs_collect

    for node in ast.walk(ast.parse(readme_analyzer())):
        if isinstance(node, ast.ImportFrom):
            assert node.module == "scoutfs_collect"
            assert {a.name for a in node.names} <= set(scoutfs_collect.__all__)
        assert not isinstance(node, ast.Import)


def test_the_verdict_explains_the_fence_that_stopped_the_recorder(tmp_path):
    """An earlier fencing line of another client in the same kernel log (not the trigger's)
    does not take the place of the fence that stopped the recorder."""
    port, ip = _port(), f"10.252.{random.randint(0, 255)}.{random.randint(1, 254)}"
    other = reconnect_line(ip, _port())
    archive = capture(tmp_path, [other, HUNG], reconnect_line("127.0.0.1", port),
                      f"client 127.0.0.1:{port} reconnect timed out, fencing")
    doc = findings(tmp_path, archive)
    fences = [f for f in doc["findings"] if f["key"] == "fence.client_reconnect"]
    assert {ip, "127.0.0.1"} <= {f["details"]["victim_ip"] for f in fences}
    v = doc["verdict"]
    assert v["category"] == "node-stall" and "kernel.hung_task" in v["keys"], v
