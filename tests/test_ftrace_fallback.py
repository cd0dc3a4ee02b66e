"""The ftrace events of an archive whose ftrace directory has no trace.txt (a node powered
off mid-finalize, a text trace that failed): ``inspect --timeline``, the Perfetto export
and ``report`` read them from trace.dat, else from the raw ring pages, with the analyst's
real trace-cmd, at the same aligned times as from trace.txt, and say where they came from.

One real capture (module fixture) records trace_marker writes on both CPUs of a private
instance; the variants are that archive unpacked, with files removed or cut, and packed
again with the project's own packer. Their manifests list the files as ``scoutfs-collect
pack`` lists them for a run that did not finish (unless a test says otherwise). trace-cmd
must only read files: the global tracefs settings, kernel.kptr_restrict and a sentinel
instance (running, with a marker in its ring) are checked before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from scoutfs_collect.analysis import ftrace_fallback, scan, timeline
from scoutfs_collect.archive import write as archive_write
from scoutfs_collect.system.tracefs import TraceInstance
from tests.support.cli import Cli, finish
from tests.support.helpers import archive_of, extract, kmsg_write, unique
from tests.test_analysis import make_bundle

pytestmark = pytest.mark.usefixtures("tracefs_untouched")

KPTR = Path("/proc/sys/kernel/kptr_restrict")
MARKS = 40


class Capture:
    def __init__(self, cli: Cli, archive: Path, nonce: str, sync: Tuple[float, float]) -> None:
        self.cli, self.archive, self.nonce, self.sync = cli, archive, nonce, sync
        self.root = cli.tmp

    def timeline(self, archive: Path, env=None) -> dict:
        res = self.run("inspect", str(archive), "--timeline", "--json", "--before", "60", env=env)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def run(self, *args: str, env=None) -> subprocess.CompletedProcess:
        if env is None:
            return self.cli.run(*args)
        return subprocess.run(self.cli.argv(*args), env=env, cwd=self.cli.tmp, capture_output=True,
                              text=True, timeout=120)

    def marks(self, doc: dict) -> List[Tuple[float, str]]:
        """(time, marker text) of every marker event of the timeline, in order."""
        out = []
        for e in doc["events"]:
            if e["source"] == "ftrace" and self.nonce in e["text"]:
                out.append((e["time"], e["text"][e["text"].index(self.nonce):]))
        return out

    def variant(self, name: str, remove=(), cut: Optional[Dict[str, int]] = None,
                relist: bool = True) -> Path:
        """The capture unpacked, its ftrace files in ``remove`` deleted, those in ``cut`` cut
        to that many bytes, the manifest's file list redone as ``scoutfs-collect pack`` does
        (with ``relist``) and the directory packed again."""
        top = extract(self.archive, self.root / name / "unpacked")
        ftrace = top / "ftrace"
        for rel in remove:
            path = ftrace / rel
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        for rel, size in (cut or {}).items():
            os.truncate(ftrace / rel, size)
        if relist:
            manifest = json.loads((top / "manifest.json").read_text())
            plugin = manifest["plugins"]["ftrace"]
            plugin["files"] = archive_write.sha256_files(ftrace)
            for key in ("trace_txt", "trace_dat"):  # the manifest written at start has neither
                plugin["details"].pop(key, None)
            (top / "manifest.json").write_text(json.dumps(manifest))
        out = self.root / name / "out"
        out.mkdir()
        return archive_write.pack(top, out, "zstd")


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Capture:
    tmp = tmp_path_factory.mktemp("ftfall")
    cli = Cli(tmp)
    nonce, instance = unique("ftfall"), unique("ftfall_cap")
    profile = cli.profile(f"""\
collectors:
  dmesg: {{}}
  ftrace:
    instance: {instance}
    events: ["sched:sched_process_exec"]
    buffer_size_kb: 256
    freeze_on: ["*{nonce} reconnect timed out, fencing*"]
triggers:
  fencing: {{type: kmsg, pattern: '{nonce} reconnect timed out, fencing'}}
""")
    proc = cli.start_capture(profile)
    try:
        cli.wait_event("armed", proc)
        marker = os.open(f"/sys/kernel/tracing/instances/{instance}/trace_marker", os.O_WRONLY)
        cpus = sorted(os.sched_getaffinity(0))
        try:
            for i in range(MARKS):  # alternate CPUs: the raw pages of every CPU hold markers
                os.sched_setaffinity(0, {cpus[i % len(cpus)]})
                os.write(marker, f"{nonce} mark {i:03d}".encode())
            before = time.time()
            os.write(marker, f"{nonce} sync".encode())
            sync = (before, time.time())
        finally:
            os.sched_setaffinity(0, set(cpus))
            os.close(marker)
        kmsg_write(f"scoutfs f.1.r.2: client 127.0.0.1:7001 {nonce} reconnect timed out, fencing")
        code, out, err = finish(proc)
        assert code == 0, err
    finally:
        cli.cleanup()
    return Capture(cli, Path(archive_of(out)), nonce, sync)


@pytest.fixture
def untouched_system():
    """A running sentinel instance with a marker in its ring, and kernel.kptr_restrict:
    trace-cmd extract/reset/record would drain, stop or remove it, restore -c (from the live
    kernel) would write the sysctl."""
    sentinel = TraceInstance(unique("ftfall_sentinel"))
    sentinel.create()
    try:
        sentinel.tracing_on = True
        sentinel.write_marker("ftfall-sentinel-marker")
        kptr = KPTR.read_text()
        yield
        assert sentinel.exists() and sentinel.tracing_on
        assert "ftfall-sentinel-marker" in sentinel.read("trace")
        assert KPTR.read_text() == kptr
    finally:
        sentinel.remove()


def _history(doc: dict) -> dict:
    return next(h for h in doc["history"] if h["name"] == "ftrace")


def test_the_capture_has_all_three_forms_and_its_markers_in_trace_txt(capture):
    doc = capture.timeline(capture.archive)
    marks = capture.marks(doc)
    assert [m for _, m in marks][:MARKS] == [f"{capture.nonce} mark {i:03d}" for i in range(MARKS)]
    assert _history(doc)["events_from"] == "trace.txt" and _history(doc)["events_note"] == ""
    members = capture.run("inspect", "--members", str(capture.archive)).stdout
    assert "trace.dat" in members and "raw/cpu1" in members


@pytest.mark.usefixtures("untouched_system")
def test_without_trace_txt_events_come_from_trace_dat_at_the_same_times(capture):
    original = capture.marks(capture.timeline(capture.archive))
    archive = capture.variant("no_text", remove=["trace.txt"])
    doc = capture.timeline(archive)
    assert capture.marks(doc) == original and len(original) == MARKS + 2  # + sync, the trigger line
    sync = next(t for t, m in original if m.endswith("sync"))
    assert capture.sync[0] - 0.001 <= sync <= capture.sync[1] + 0.001  # on the wall clock
    assert _history(doc)["events_from"] == "trace.dat"
    assert "ftrace events from trace.dat (the archive has no trace.txt)" in _history(doc)["events_note"]
    text = capture.run("inspect", str(archive), "--timeline", "--before", "60").stdout
    assert "ftrace events from trace.dat" in text
    assert sum(1 for line in text.splitlines() if f"{capture.nonce} mark" in line) == MARKS
    # inspect without a timeline reads the manifest only, and says the same
    assert "ftrace events from trace.dat" in capture.run("inspect", str(archive)).stdout
    manifest_doc = json.loads(capture.run("inspect", "--json", str(archive)).stdout)
    assert _history(manifest_doc)["events_from"] == "trace.dat"


@pytest.mark.usefixtures("untouched_system")
def test_without_trace_txt_and_trace_dat_events_come_from_the_raw_ring_pages(capture, tmp_path):
    original = capture.marks(capture.timeline(capture.archive))
    archive = capture.variant("raw_only", remove=["trace.txt", "trace.dat"])
    doc = capture.timeline(archive)
    assert capture.marks(doc) == original
    hist = _history(doc)
    assert hist["events_from"] == "raw"
    assert hist["events_note"].startswith("ftrace events from raw ring pages (the archive has no "
                                          "trace.txt or trace.dat)")
    assert "ftrace events from raw ring pages" in capture.run("inspect", str(archive)).stdout
    # the Perfetto export and the report take the same events
    trace = tmp_path / "t.json"
    res = capture.run("inspect", str(archive), "--export", "perfetto", "-o", str(trace), "--before", "60")
    assert res.returncode == 0, res.stderr
    names = json.dumps(json.loads(trace.read_text()))
    assert all(f"{capture.nonce} mark {i:03d}" in names for i in range(MARKS))
    html = tmp_path / "r.html"
    res = capture.run("report", str(archive), "-o", str(html))
    assert res.returncode == 0, res.stderr
    assert "ftrace events from raw ring pages" in html.read_text()


def test_an_archive_that_lost_trace_txt_after_its_manifest_reads_trace_dat(capture):
    """The manifest lists trace.txt but the archive has none: one more pass over the
    archive copies trace.dat."""
    original = capture.marks(capture.timeline(capture.archive))
    archive = capture.variant("stale_manifest", remove=["trace.txt"], relist=False)
    doc = capture.timeline(archive)
    assert capture.marks(doc) == original
    assert _history(doc)["events_from"] == "trace.dat"


def test_a_trace_dat_cut_short_gives_way_to_the_raw_ring_pages(capture):
    """trace-cmd reports no event (and exits 0) for a trace.dat cut short, as a power loss
    while it was written leaves it: the raw pages are read in one more pass."""
    original = capture.marks(capture.timeline(capture.archive))
    size = (extract(capture.archive, capture.root / "dat_src") / "ftrace" / "trace.dat").stat().st_size
    archive = capture.variant("dat_cut", remove=["trace.txt"], cut={"trace.dat": size - 100})
    doc = capture.timeline(archive)
    assert capture.marks(doc) == original
    hist = _history(doc)
    assert hist["events_from"] == "raw"
    assert "trace.dat: trace-cmd report found no event" in hist["events_note"], hist


@pytest.mark.parametrize("others, form, kept", [
    ([], "trace.dat", MARKS + 2),  # trace.dat holds every event: read instead
    (["trace.dat", "raw"], "trace.txt", 20),  # nothing else: up to the cut
])
def test_a_trace_txt_cut_mid_line_does_not_crash(capture, others, form, kept):
    """A run that ended while trace.txt was written: its manifest (completed by
    ``scoutfs-collect pack``) does not record the text as finished."""
    name = f"cut{len(others)}"
    text = (extract(capture.archive, capture.root / f"{name}_src") / "ftrace" / "trace.txt").read_bytes()
    line = text.index(f"{capture.nonce} mark 020".encode())
    archive = capture.variant(name, remove=others, cut={"trace.txt": line - 20})  # mid-timestamp
    res = capture.run("inspect", str(archive), "--timeline", "--json", "--before", "60")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    doc = json.loads(res.stdout)
    original = capture.marks(capture.timeline(capture.archive))
    assert capture.marks(doc) == original[:kept]
    assert _history(doc)["events_from"] == form
    assert "trace.txt may be cut short" in _history(doc)["events_note"]
    assert _history(json.loads(capture.run("inspect", "--json", str(archive)).stdout))["events_from"] == form


def test_without_trace_cmd_the_timeline_says_so_in_one_line_and_goes_on(capture, tmp_path):
    archive = capture.variant("no_tool", remove=["trace.txt"])
    bin_dir = tmp_path / "bin"  # a PATH with zstd (to read the archive) and no trace-cmd
    bin_dir.mkdir()
    (bin_dir / "zstd").symlink_to(shutil.which("zstd"))
    env = dict(capture.cli.env, PATH=str(bin_dir))
    res = capture.run("inspect", str(archive), "--timeline", "--before", "60", env=env)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    said = [line for line in res.stdout.splitlines() if "trace-cmd" in line]
    assert len(said) == 1 and "needs trace-cmd, which is not installed" in said[0], said
    assert f"{capture.nonce} mark" not in res.stdout
    assert f"{capture.nonce} reconnect timed out" in res.stdout  # the kernel log is still there
    doc = capture.timeline(archive, env=env)
    assert _history(doc)["events_from"] == "none"


@pytest.mark.parametrize("files, details, form", [
    ([], {}, "trace.txt"),  # no list: cannot tell, read trace.txt
    ([("trace.txt", 10), ("trace.dat", 10), ("raw/cpu0", 10)], {"trace_txt": "tracefs"}, "trace.txt"),
    ([("trace.txt", 0), ("trace.dat", 10), ("raw/cpu0", 10)], {}, "trace.dat"),
    ([("trace.dat", 10), ("raw/cpu0", 10)], {}, "trace.dat"),
    ([("raw/cpu0", 10), ("raw/events/header_page", 10)], {}, "raw"),
    ([("raw/events/header_page", 10)], {}, "none"),
])
def test_the_manifest_alone_says_where_the_events_would_come_from(files, details, form):
    plugin = {"type": "ftrace", "files": [{"path": p, "size": s} for p, s in files], "details": details}
    assert ftrace_fallback.planned_origin(plugin).form == form
    assert ftrace_fallback.planned_origin({"files": "bogus", "details": None}).form == "trace.txt"


def test_nothing_is_copied_when_the_archive_has_trace_txt(capture, monkeypatch):
    copies: List[str] = []
    real = ftrace_fallback.Fallback._copy

    def spy(self, d, form, rel, *rest):
        copies.append("/".join(rel))
        return real(self, d, form, rel, *rest)

    monkeypatch.setattr(ftrace_fallback.Fallback, "_copy", spy)
    with timeline.analyse(capture.archive, before=60) as a:
        assert a.nodes[0].ftrace_from["ftrace"].form == "trace.txt"
    assert copies == []
    with timeline.analyse(capture.variant("spy", remove=["trace.txt"]), before=60) as a:
        assert a.nodes[0].ftrace_from["ftrace"].form == "trace.dat"
    assert copies == ["trace.dat"]  # the one form needed, not raw/


def test_a_copy_that_would_fill_the_temporary_directory_is_not_made(capture, monkeypatch):
    archive = capture.variant("full_tmp", remove=["trace.txt"])
    monkeypatch.setattr(ftrace_fallback, "SPARE", 1 << 60)  # more than any disk has free
    with timeline.analyse(archive, before=60) as a:
        origin = a.nodes[0].ftrace_from["ftrace"]
        assert origin.form == "none" and "would leave less than" in origin.note, origin
        assert not any(e.source == "ftrace" for e in a.events())
        assert any(e.source == "dmesg" and capture.nonce in e.text for e in a.events())
        assert not list(Path(a.tmp.name).glob("ftrace-fallback.*"))


def test_a_bundle_node_without_trace_txt_has_its_events_on_its_own_clock(capture, tmp_path):
    offsets = {"node1": 0.0, "node2": 250.0}
    archive = capture.variant("bundled", remove=["trace.txt", "trace.dat"])
    bundle = make_bundle(str(archive), tmp_path, offsets)
    doc = capture.timeline(bundle)
    original = capture.marks(capture.timeline(capture.archive))
    for node, offset in offsets.items():
        marks = capture.marks({"events": [e for e in doc["events"] if e["node"] == node]})
        assert [m for _, m in marks] == [m for _, m in original]
        assert all(abs((t0 - t) * 1000 - offset) < 0.01 for (t0, _), (t, _) in zip(original, marks))
    assert {(h["node"], h["events_from"]) for h in doc["history"] if h["kind"] == "ftrace"} == \
        {("node1", "raw"), ("node2", "raw")}


@pytest.mark.parametrize("remove, cut, form", [
    ([], False, "trace.txt"),
    (["trace.txt"], False, "trace.dat"),
    (["trace.txt", "trace.dat"], False, "raw"),
    ([], True, "trace.dat"),  # an unfinished trace.txt: both readers leave it aside
])
def test_two_readers_give_the_same_events_as_one(capture, monkeypatch, remove, cut, form):
    """scan_split's second reader (forked above SPLIT_ABOVE bytes of text) keeps off what
    the first reader copies: no event twice, none lost."""
    tag = "split" + "".join(r[-3:] for r in remove) + ("cut" if cut else "")
    archive = capture.variant(tag, remove=remove, cut={"trace.txt": 4000} if cut else None) \
        if remove or cut else capture.archive
    with timeline.analyse(archive, before=60) as a:
        one = [e for e in a.events() if e.source == "ftrace"]
    monkeypatch.setattr(scan, "SPLIT_ABOVE", 0)
    shares, real = [], scan.scan

    def spy(*args, **kwargs):
        shares.append(args[9] if len(args) > 9 else kwargs.get("share"))
        return real(*args, **kwargs)

    monkeypatch.setattr(scan, "scan", spy)
    with timeline.analyse(archive, before=60) as a:
        two = [e for e in a.events() if e.source == "ftrace"]
        assert a.nodes[0].ftrace_from["ftrace"].form == form
    assert two == one and len(one) > MARKS
    split = any(s is not None and not s.is_child for s in shares)
    assert split == ("trace.txt" not in remove)  # two readers above 0 bytes of text
