"""The analysis of a real archive through the CLI: ``inspect --timeline`` (one clock for
ftrace, the kernel log, packets and counters), the history each ring kept, the Perfetto
export, the HTML report rendered by a real browser, and cluster bundles.

One capture (module fixture) records real trace_marker writes, /dev/kmsg lines and UDP
packets on lo; a trace_marker write, a kernel log line and a UDP packet made at one
instant must land within 1 ms of each other on the timeline. Kernel lines and marker
writes holding a tab and an escape sequence (the trigger line too) must print escaped,
the same on every output. The scoutfs sysfs tree is the fixture (the module cannot load
here). No test depends on what the machine logged before it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tarfile
import time
from html import escape as html_escape
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoutfs_collect import Target
from scoutfs_collect.analysis import cli as analysis_cli
from scoutfs_collect.analysis import packets
from scoutfs_collect.archive.read import read_manifest
from scoutfs_collect.builtin_plugins.collectors.tcpdump import Tcpdump
from scoutfs_collect.demo import fixture
from scoutfs_collect.system.pcap import PcapReader
from tests.support.browser import check_report
from tests.support.cli import Cli, finish
from tests.support.helpers import archive_of, kmsg_write, make_plugin, unique, wait_for

TRACEFS = Path("/sys/kernel/tracing")


# written into /dev/kmsg and a trace_marker during the capture (after the nonce): a tab
# and an escape sequence, and how every output must show them
CONTROL_LINES = {"tab a\tb": "tab a\\x09b", "esc \x1b[31mred\x1b[0m": "esc \\x1b[31mred\\x1b[0m"}
TRIGGER_TAIL = ("\t\x1b[0m", "\\x09\\x1b[0m")  # the trigger line ends with these (written, shown)
RAW_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]")  # any control byte but the newline


class Capture:
    """The archive of one real run, and what was sent into it."""

    def __init__(self, cli: Cli, archive: str, nonce: str, sport: int, port: int,
                 instants: Dict[str, Tuple[float, float]], console: str) -> None:
        self.cli, self.archive, self.nonce, self.sport, self.port = cli, archive, nonce, sport, port
        self.console = console  # what the run printed on stderr
        self.instants = instants  # source -> (epoch before, epoch after) the sync write
        self.shown = [f"{nonce} {shown}" for shown in CONTROL_LINES.values()]  # as printed

    def run(self, *args: str):
        return self.cli.run(*args)

    def timeline(self, *args: str) -> dict:
        result = self.cli.run("inspect", self.archive, "--timeline", "--json", *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Capture:
    tmp = tmp_path_factory.mktemp("analysis")
    cli = Cli(tmp)
    nonce, instance = unique("tl"), unique("sc_tl")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (mount,) = fixture.build(tmp / "sysfs", mounts=1)
    kmsg_write(f"{nonce} before the run")  # in the ring the dmesg collector reads at start
    profile = cli.profile(f"""\
collectors:
  dmesg: {{}}
  scoutfs-counters: {{sysfs_root: {tmp / 'sysfs'}, interval: 0.2}}
  ftrace:
    instance: {instance}
    events: ["sched:sched_process_exec"]
    buffer_size_kb: 128
    freeze_on: ["*{nonce} reconnect timed out, fencing*"]
  tcpdump: {{interface: lo, heartbeat_timeout: 0, file_size_mb: 1, file_count: 2}}
triggers:
  fencing: {{type: kmsg, pattern: '{nonce} reconnect timed out, fencing'}}
""")
    proc = cli.start("--profile", str(profile), "--output-dir", str(cli.out),
                     "--events-file", str(cli.events), "127.0.0.1", str(port))
    instants: Dict[str, Tuple[float, float]] = {}
    try:
        cli.wait_event("armed", proc)
        marker = os.open(TRACEFS / "instances" / instance / "trace_marker", os.O_WRONLY)
        kmsg = os.open("/dev/kmsg", os.O_WRONLY)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sync_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sync_udp.bind(("127.0.0.1", 0))  # its own flow: not folded into the filler's burst
        try:
            for i in range(20000):  # wraps the 128 KiB ring of this CPU
                os.write(marker, f"{nonce} filler {i:05d} ".encode() * 3)
            ring = next(cli.out.glob("scoutfs-collect.*/tcpdump"))
            for _ in range(400):  # until tcpdump reuses pcap0: its ring of 2 x 1 MB wrapped
                if _pcap_ring_wrapped(ring):
                    break
                sizes = _sizes(ring)
                for _ in range(50):
                    udp.sendto(b"x" * 1400, ("127.0.0.1", port))
                wait_for(lambda before=sizes: _sizes(ring) != before, 10, "tcpdump to write the batch")
            assert _pcap_ring_wrapped(ring)
            fixture.bump(mount, "lock_lock", 7)
            # one instant, three sources: each write takes a few microseconds; the clock is
            # read around each, so a preemption between two writes is not taken for an error
            instants["ftrace"] = _bracket(lambda: os.write(marker, f"{nonce} sync".encode()))
            instants["dmesg"] = _bracket(lambda: os.write(kmsg, f"<6>{nonce} sync\n".encode()))
            sync = (f"{nonce} sync".encode(), ("127.0.0.1", port))
            instants["tcpdump"] = _bracket(lambda: sync_udp.sendto(*sync))
            sport = sync_udp.getsockname()[1]
            for written in CONTROL_LINES:  # a kernel line (also a printk:console event) and a marker
                os.write(kmsg, f"<6>{nonce} {written}\n".encode())
                os.write(marker, f"{nonce} {written}".encode())
        finally:
            os.close(marker)
            os.close(kmsg)
            udp.close()
            sync_udp.close()
        kmsg_write(f"scoutfs f.000001.r.000002: client 127.0.0.1:{port} {nonce} reconnect timed out, "
                   f"fencing{TRIGGER_TAIL[0]}")
        code, out, err = finish(proc)
        assert code == 0, err
    finally:
        cli.cleanup()
    return Capture(cli, archive_of(out), nonce, sport, port, instants, err)


def _bracket(write) -> Tuple[float, float]:
    before = time.time()
    write()
    return before, time.time()


def _sizes(ring: Path) -> dict:
    return {p.name: p.stat().st_size for p in ring.glob("tcpdump.pcap*")}


def _pcap_ring_wrapped(ring: Path) -> bool:
    files = {p.name: p.stat().st_mtime_ns for p in ring.glob("tcpdump.pcap[0-9]")}
    return len(files) == 2 and files["tcpdump.pcap0"] > files["tcpdump.pcap1"]


def _sync_events(doc: dict, cap: Capture) -> dict:
    found = {}
    for e in doc["events"]:
        if e["source"] == "ftrace" and e["text"].endswith(f"tracing_mark_write: {cap.nonce} sync"):
            found["ftrace"] = e
        elif e["source"] == "dmesg" and e["text"] == f"{cap.nonce} sync":
            found["dmesg"] = e
        elif e["source"] == "tcpdump" and e["text"].startswith(
                f"127.0.0.1:{cap.sport} → 127.0.0.1:{cap.port} UDP"):
            found["tcpdump"] = e
    return found


def test_marker_kmsg_line_and_udp_packet_of_one_instant_land_within_1_ms(capture):
    doc = capture.timeline()
    found = _sync_events(doc, capture)
    assert set(found) == {"ftrace", "dmesg", "tcpdump"}, found
    probes = read_manifest(Path(capture.archive))["plugins"]["dmesg"]["details"]["clock_probes"]
    assert {p["when"] for p in probes} == {"start", "stop"} and all("offset" in p for p in probes)
    for source, (before, after) in capture.instants.items():  # each on the wall clock, to 1 ms
        assert before - 0.001 <= found[source]["time"] <= after + 0.001, (source, before, after, found)
    times = [e["time"] for e in found.values()]
    written = [t for pair in capture.instants.values() for t in pair]
    # within 1 ms of each other (plus whatever the scheduler put between the writes)
    assert max(times) - min(times) < 0.001 + (max(written) - min(written)), found
    assert all(-2.0 <= e["rel"] < 0 for e in found.values())
    assert all(e["utc"].endswith("Z") and len(e["utc"]) == len("2026-12-03T14:09:18.675884Z")
               for e in found.values())
    # one merged order, every source present, the counter change as `name +delta`
    assert [e["time"] for e in doc["events"]] == sorted(e["time"] for e in doc["events"])
    assert any(e["source"] == "scoutfs-counters" and e["text"].startswith("lock_lock +7")
               for e in doc["events"])
    # batches of 50 packets within a few ms are one burst line each, not 50 lines
    packet_lines = [e for e in doc["events"] if e["source"] == "tcpdump"]
    bursts = [int(e["text"].split()[1]) for e in packet_lines if e["text"].startswith("burst: ")]
    assert bursts and all(n > 20 for n in bursts)
    assert sum(bursts) > 5 * len(packet_lines)


def test_timeline_text_window_and_sources(capture):
    out = capture.run("inspect", capture.archive, "--timeline", "--sources", "kmsg,packets")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line[:4].isdigit()]
    assert lines and all(("  dmesg  " in line) or ("  tcpdump  " in line) for line in lines)
    sync = next(line for line in lines if line.endswith(f"{capture.nonce} sync"))
    rel = float(sync.split()[1])
    assert -2.0 <= rel < 0 and len(sync.split()[1].split(".")[1]) == 6
    # a window that ends before the sync instant does not show it
    doc = capture.timeline("--before", "1000000", "--after", "0")
    assert all(e["rel"] <= 0 for e in doc["events"])
    assert f"{capture.nonce} before the run" in [e["text"] for e in doc["events"]]  # the ring at start
    narrow = capture.timeline("--before", "0", "--after", "0.1")
    assert _sync_events(narrow, capture) == {}
    assert f"{capture.nonce} before the run" not in [e["text"] for e in narrow["events"]]


@pytest.mark.parametrize("args, message", [
    (["--sources", "bogus"], "unknown source 'bogus'"),
    (["--before", "-1"], "--before"),
    (["--export", "perfetto"], "needs -o"),
])
def test_timeline_bad_arguments_exit_2_with_one_line(capture, args, message):
    result = capture.run("inspect", capture.archive, "--timeline", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_timeline_of_a_file_that_is_not_an_archive_exits_2(capture, tmp_path):
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(b"not an archive at all")
    result = capture.run("inspect", str(bad), "--timeline")
    assert result.returncode == 2 and "bad.tar.zst" in result.stderr and "Traceback" not in result.stderr


def test_history_says_which_rings_wrapped_with_a_sizing_hint(capture):
    result = capture.run("inspect", "--json", capture.archive)
    assert result.returncode == 0, result.stderr
    history = {h["name"]: h for h in json.loads(result.stdout)["history"]}
    ft, pk = history["ftrace"], history["tcpdump"]
    assert ft["wrapped"] is True and "overwritten" in ft["lost"]
    assert ft["hint"].startswith("ftrace kept ") and "buffer_size_kb: " in ft["hint"]
    assert 0 < ft["complete_s"] <= ft["reach_s"]
    suggested = int(ft["hint"].split("buffer_size_kb: ")[1].split()[0])
    assert suggested > 128 and ft["rate_bytes_s"] > 0
    assert pk["wrapped"] is True and "rotated-out" in pk["lost"] and "file_count: " in pk["hint"]
    assert history["scoutfs-counters"]["wrapped"] is False
    text = capture.run("inspect", capture.archive).stdout
    assert "History kept" in text and "WRAPPED" in text and "buffer_size_kb: " in text


def test_perfetto_export_follows_the_trace_event_format(capture, tmp_path):
    out = tmp_path / "trace.json"
    result = capture.run("inspect", capture.archive, "--export", "perfetto", "-o", str(out))
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    threads = {}
    for ev in events:
        assert ev["ph"] in ("M", "i", "C"), ev
        assert isinstance(ev["pid"], int) and isinstance(ev["tid"], int) and isinstance(ev["name"], str)
        if ev["ph"] == "M":
            assert ev["name"] in ("process_name", "thread_name", "thread_sort_index") and "args" in ev
            if ev["name"] == "thread_name":
                threads[(ev["pid"], ev["tid"])] = ev["args"]["name"]
            continue
        assert isinstance(ev["ts"], (int, float)) and ev["ts"] >= 0
        if ev["ph"] == "i":
            assert ev["s"] in ("g", "p", "t")
        if ev["ph"] == "C":
            assert all(isinstance(v, (int, float)) for v in ev["args"].values())
    names = set(threads.values())
    assert {"dmesg (kmsg)", "ftrace (ftrace)", "tcpdump (packets)", "scoutfs-counters (counters)"} <= names
    records = [ev for ev in events if ev["ph"] == "i" and ev["s"] == "t"]
    assert all((ev["pid"], ev["tid"]) in threads for ev in records)
    assert [ev for ev in events if ev["name"] == "trigger" and ev["s"] == "g"]
    syncs = [ev for ev in records if ev["args"]["text"] == f"{capture.nonce} sync"
             or ev["args"]["text"].endswith(f"tracing_mark_write: {capture.nonce} sync")]
    written = (capture.instants["dmesg"][1] - capture.instants["ftrace"][0]) * 1e6
    assert len(syncs) == 2 and abs(syncs[0]["ts"] - syncs[1]["ts"]) < 1000 + written  # microseconds


def test_report_is_one_self_contained_file_a_browser_renders(capture, tmp_path):
    html = tmp_path / "report.html"
    result = capture.run("report", capture.archive, "-o", str(html))
    assert result.returncode == 0, result.stderr
    dom = check_report(tmp_path, html, {"dmesg", "ftrace", "tcpdump", "scoutfs-counters"})
    assert "lock_lock" in dom and "wrapped" in dom and f"{capture.nonce} sync" in dom
    assert "fencing" in dom  # the trigger in the header


def make_bundle(archive: str, dest: Path, offsets: dict) -> Path:
    """A cluster bundle in issue 9's format (cluster.json first, nodes/NODE/<archive>), from
    one real archive copied per node, so each node's clock differs only by its
    clock_offset_ms and the alignment can be checked exactly. A stand-in for the offsets:
    the real 3-host bundle (tests/test_cluster_analysis.py) comes from test hosts that
    share this machine's one clock, so their estimated offsets are microseconds, too small
    to show an alignment applied the wrong way round; these are hundreds of ms."""
    top = "scoutfs-collect-cluster.20261203-000000Z"
    name = Path(archive).name
    nodes = {}
    m = read_manifest(Path(archive))
    origin = sorted(offsets)[0]
    for node, offset in offsets.items():
        trig = dict(m["trigger"], time=m["trigger"]["time"] + offset / 1000)
        nodes[node] = {"status": "ok", "exit": 0, "archive": f"nodes/{node}/{name}", "sha256": "",
                       "trigger": trig if node == origin else dict(trig, type="peer"),
                       "stopped": m["times"]["stopped"] + offset / 1000,
                       "stop_lag_ms": round((m["times"]["stopped"] - m["trigger"]["time"]) * 1000, 3),
                       "clock_offset_ms": offset, "error": None}
    cluster = {"format": 1, "nodeset": ",".join(offsets), "nodes": nodes,
               "origin": {"node": origin, "name": m["trigger"]["name"], "type": m["trigger"]["type"],
                          "reason": m["trigger"]["reason"], "time": nodes[origin]["trigger"]["time"]}}
    bundle = dest / f"{top}.tar"
    doc = dest / "cluster.json"
    doc.write_text(json.dumps(cluster))
    with tarfile.open(bundle, "w") as tar:
        tar.add(doc, f"{top}/cluster.json")
        for node in offsets:
            tar.add(archive, f"{top}/nodes/{node}/{name}")
    return bundle


def test_bundle_timeline_aligns_node_clocks_and_report_has_a_lane_per_node(capture, tmp_path):
    offsets = {"node1": 0.0, "node2": 250.0, "node3": -40.0}
    bundle = make_bundle(capture.archive, tmp_path, offsets)
    result = capture.run("inspect", str(bundle), "--timeline", "--json", "--sources", "kmsg")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["bundle"] is True
    sync = {e["node"]: e["time"] for e in doc["events"] if e["text"] == f"{capture.nonce} sync"}
    assert set(sync) == set(offsets)
    for node, offset in offsets.items():  # the same instant, seen through each node's clock
        assert abs((sync["node1"] - sync[node]) * 1000 - offset) < 0.01, (node, sync)
    text = capture.run("inspect", str(bundle), "--timeline", "--sources", "kmsg").stdout
    assert any(line.split()[2] == "node2/dmesg" for line in text.splitlines() if line[:4].isdigit())
    html = tmp_path / "bundle.html"
    result = capture.run("report", str(bundle), "-o", str(html))
    assert result.returncode == 0, result.stderr
    dom = check_report(tmp_path, html, {f"{n}/{s}" for n in offsets for s in ("dmesg", "ftrace", "tcpdump")})
    assert dom.count('class="stopline"') == 3 and "origin <b>node1</b>" in dom


@pytest.mark.parametrize("ip, interface, linktype", [("127.0.0.1", "any", 276), ("::1", "lo", 1)])
def test_packet_lines_of_real_captures_name_both_ends(tmp_path, ip, interface, linktype):
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sink:
        sink.bind((ip, 0))
        port = sink.getsockname()[1]
        collector = make_plugin(Tcpdump, tmp_path / "t", Target(ip, port), interface=interface,
                                heartbeat_timeout=0)
        try:
            assert collector.preflight() == []
            collector.start()
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.bind((ip, 0))
                sport = s.getsockname()[1]
                for _ in range(3):
                    s.sendto(b"p" * 100, (ip, port))
            collector.stop()
            collector.finalize()
        finally:
            collector.cleanup()
    reader = PcapReader(tmp_path / "t" / "tcpdump.pcap0", with_data=True)
    lines = [text for _, text in packets.lines(packets.decode(r.time, reader.linktype, r.data, r.origlen)
                                               for r in reader)]
    assert reader.linktype == linktype
    src, dst = (f"[{ip}]:{p}" if ":" in ip else f"{ip}:{p}" for p in (sport, port))
    lengths = [r.origlen for r in PcapReader(tmp_path / "t" / "tcpdump.pcap0")]
    assert lines == [f"{src} → {dst} UDP len {n}" for n in lengths]
    assert len(lines) == 3


_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
_json = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)
_DETAIL_KEYS = ["cpu_stats", "buffer_size_kb", "trace_clock", "clock_offset_s", "command", "files",
                "files_in_order", "packets_captured", "packets_in_files", "lost", "first_seq",
                "clock_probes", "series_dropped_before"]
_plugin = st.fixed_dictionaries(
    {"type": st.sampled_from(["ftrace", "tcpdump", "dmesg", "scoutfs-counters"])},
    optional={"window": _json, "details": st.dictionaries(st.sampled_from(_DETAIL_KEYS), _json)})


@settings(max_examples=150, deadline=None)
@given(manifest=st.fixed_dictionaries({"format": st.just(1)}, optional={
    "plugins": st.dictionaries(st.text(min_size=1, max_size=6), _plugin, max_size=3) | _json,
    "times": _json, "trigger": _json}))
def test_history_of_a_damaged_manifest_never_raises(manifest):
    text = analysis_cli.history_text(manifest)
    assert isinstance(analysis_cli.history_section(manifest), list) and isinstance(text, str)


def test_a_bundle_with_a_broken_cluster_json_exits_2_naming_it(capture, tmp_path):
    bundle = tmp_path / "scoutfs-collect-cluster.x.tar"
    doc = tmp_path / "cluster.json"
    doc.write_text('{"nodes": [1, 2]}')
    with tarfile.open(bundle, "w") as tar:
        tar.add(doc, "top/cluster.json")
    result = capture.run("report", str(bundle), "-o", str(tmp_path / "r.html"))
    assert result.returncode == 2 and "cluster.json" in result.stderr and "'nodes'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r.html").exists()


def _timeline_in_process(archive: str, out, text: bool, split_above: int, monkeypatch):
    """``inspect --timeline`` of the whole archive (wide window) in this process; the
    stats of every source, and the number of spool files."""
    from scoutfs_collect.analysis import scan, sources, timeline

    monkeypatch.setattr(scan, "SPLIT_ABOVE", split_above)
    monkeypatch.setattr(sources, "CHUNK", 4096)  # a small trace in many blocks: both processes get some
    with timeline.analyse(Path(archive), 1e6, 1e6, text=text) as a:
        timeline.render(a, out)
        stats = sorted((s.label, s.count, s.in_window, s.first, s.last) for s in a.stats())
        return stats, len(a.nodes[0].spools)


def _event_lines(text: str) -> list:
    return [line for line in text.splitlines() if line[:4].isdigit()]


def test_timeline_is_the_same_however_it_is_read(capture, monkeypatch, tmp_path):
    """Printed lines spooled and merged by sort -m, the trace read by two processes, and
    data lines merged in Python all give the same timeline."""
    import io
    import multiprocessing

    plain = io.StringIO()  # no file descriptor: the merge in Python
    whole_stats, whole_spools = _timeline_in_process(capture.archive, plain, False, 1 << 60, monkeypatch)
    with open(tmp_path / "split.txt", "w") as f:  # a real file: sort -m
        split_stats, split_spools = _timeline_in_process(capture.archive, f, True, 0, monkeypatch)
    assert multiprocessing.active_children() == []
    assert split_spools == whole_spools + 1  # the second reader's share of the trace
    whole = _event_lines(plain.getvalue())
    split = _event_lines((tmp_path / "split.txt").read_text())
    assert whole_stats == split_stats
    assert sum(f"{capture.nonce} filler" in line for line in whole) > 500
    for shown in capture.shown:  # this run's kernel lines and markers with a tab and an ESC
        assert sum(line.endswith(shown) for line in whole) >= 2, shown
    # the same lines; lines of one microsecond may come in another order
    assert sorted(whole) == sorted(split)
    assert [line.split()[0] for line in split] == sorted(line.split()[0] for line in split)
    by_cli = _event_lines(capture.run("inspect", capture.archive, "--timeline", "--before", "1e6",
                                      "--after", "1e6").stdout)
    assert sorted(by_cli) == sorted(whole)


def _printed(capture: Capture, *args: str, to_file: Optional[Path] = None) -> bytes:
    """The bytes ``inspect ARCHIVE *args`` prints, through a pipe or into ``to_file``."""
    argv = capture.cli.argv("inspect", capture.archive, *args)
    if to_file is None:
        done = subprocess.run(argv, env=capture.cli.env, cwd=capture.cli.tmp, capture_output=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout
    with open(to_file, "wb") as out:
        done = subprocess.run(argv, env=capture.cli.env, cwd=capture.cli.tmp, stdout=out,
                              stderr=subprocess.PIPE, timeout=120)
    assert done.returncode == 0, done.stderr
    return to_file.read_bytes()


def test_tabs_and_escapes_of_kernel_lines_print_escaped_and_alike_everywhere(capture, tmp_path):
    """This run's kernel lines, printk:console events and trace_marker writes holding a
    tab and an ESC sequence: each output shows them as ``\\x09`` and ``\\x1b``, never raw,
    and the same records print the same bytes whichever path printed them."""
    wide = ("--timeline", "--before", "1e6", "--after", "1e6")
    piped = _printed(capture, *wide)
    assert _printed(capture, *wide, to_file=tmp_path / "timeline.txt") == piped
    assert RAW_CONTROL.search(piped) is None
    lines = [line for line in piped.decode().splitlines() if line[:4].isdigit()]
    for shown in capture.shown:
        sources = {line.split()[2] for line in lines if line.endswith(shown)}
        assert sources == {"dmesg", "ftrace"}, (shown, sources)
        # the kernel line as itself and as its printk:console event, and the marker write
        ftrace = [line for line in lines if line.endswith(shown) and " ftrace " in line]
        # (the text is trace-cmd report's: "print:  tracing_mark_write: ...")
        assert any(": console: " in line for line in ftrace) and \
            any(" tracing_mark_write: " in line for line in ftrace), ftrace

    doc = json.loads(_printed(capture, *wide, "--json"))
    width = max(len(s["name"]) for s in doc["sources"])
    from_json = [f"{e['utc']} {e['rel']:+10.6f}  {e['source']:<{width}}  {e['text']}" for e in doc["events"]]
    assert from_json == lines  # the same records, times and text, in the same order
    assert all(RAW_CONTROL.search(e["text"].encode()) is None for e in doc["events"])

    trace = tmp_path / "trace.json"
    assert capture.run("inspect", capture.archive, *wide[1:], "--export", "perfetto", "-o",
                       str(trace)).returncode == 0
    texts = [ev["args"]["text"] for ev in json.loads(trace.read_text())["traceEvents"]
             if ev["ph"] == "i" and ev["s"] == "t"]
    assert sorted(texts) == sorted(e["text"] for e in doc["events"])

    html = tmp_path / "report.html"
    assert capture.run("report", capture.archive, "--before", "1e6", "-o", str(html)).returncode == 0
    page = html.read_bytes()
    assert RAW_CONTROL.search(page) is None
    for shown in capture.shown:
        assert html_escape(shown).encode() in page, shown
    assert f"fencing{TRIGGER_TAIL[1]}".encode() in page  # the trigger's reason in the header

    # the run's own console said which line triggered it
    assert RAW_CONTROL.search(capture.console.encode()) is None
    assert f"fencing{TRIGGER_TAIL[1]}" in capture.console

    summary = _printed(capture)  # inspect's summary: the trigger's reason is the kernel line
    assert RAW_CONTROL.search(summary) is None
    assert f"fencing{TRIGGER_TAIL[1]}".encode() in summary  # (wrapped: the reason's last word)


def test_timeline_into_a_closed_pipe_ends_quietly(capture):
    argv = capture.cli.argv("inspect", capture.archive, "--timeline", "--before", "1e6")
    proc = subprocess.Popen(argv, env=capture.cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"Timeline of ")
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141
    assert b"Traceback" not in err and b"Error" not in err
