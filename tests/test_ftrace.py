"""The ftrace collector on the real kernel: private instances, real /dev/kmsg lines."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psutil
import pytest

import scoutfs_collect.builtin_plugins.collectors.ftrace as ftrace_plugin
from scoutfs_collect.builtin_plugins.collectors.ftrace import Ftrace
from scoutfs_collect.plugin import options
from scoutfs_collect.plugin.api import PluginContext, Target
from scoutfs_collect.system import proc, tracefs
from scoutfs_collect.system.tracefs import TraceInstance
from tests.support.helpers import kmsg_write, make_plugin, unique, write_marker_if_on

ROOT = tracefs.DEFAULT_ROOT

pytestmark = pytest.mark.usefixtures("tracefs_untouched")


@pytest.fixture
def make(tmp_path):
    """Build Ftrace collectors; every instance they name is removed at teardown."""
    made = []

    def build(dry_run: bool = False, **values):
        values.setdefault("instance", unique("sct_ft"))
        values.setdefault("buffer_size_kb", 1024)
        collector = make_plugin(Ftrace, tmp_path / f"work{len(made)}", dry_run=dry_run, **values)
        made.append(collector)
        return collector

    yield build
    for c in made:
        c.cleanup()
        if "/" not in c.options.instance and TraceInstance(c.options.instance).exists():
            TraceInstance(c.options.instance).remove()


def console_lines(text: str) -> list:
    return [ln for ln in text.splitlines() if " console: " in ln]


def test_in_kernel_freeze_end_to_end(make):
    glob = unique("freeze")
    # Someone else's instance, armed on another glob: our self-test must not stop it.
    other = TraceInstance(unique("sct_other"))
    other.create()
    try:
        other.enable_events(["printk:console"])
        other.set_trigger("printk:console", f'traceoff if msg ~ "*{unique("otherglob")}*"')
        c = make(events=["sched:sched_switch", "ftrace:print"], freeze_on=[f"*{glob}*"])
        assert [p for p in c.preflight() if p.fatal] == []
        started = time.time()
        c.start()
        det, inst = c.ctx.details, c._inst
        assert det["self_test"]["result"] == "passed" and det["freeze_mode"] == "in-kernel"
        assert other.tracing_on, "the self-test line stopped another instance"
        assert list(c.ctx.workdir.iterdir()) == []  # ring mode: nothing on disk while armed
        for n in range(3):
            write_marker_if_on(inst, f"before-{n}")
        assert c.bytes_written() > 0  # the ring in use, not disk bytes
        kmsg_write(f"scoutfs f.000000.r.000000: test {glob} line")
        assert inst.tracing_on is False  # stopped synchronously, in the kernel
        assert other.tracing_on
        for n in range(3):
            write_marker_if_on(inst, f"after-{n}")
        c.stop()
        assert det["frozen_by"] == "in-kernel trigger"
        assert list(c.ctx.workdir.iterdir()) == []
        c.finalize()
    finally:
        other.remove()
    wd = c.ctx.workdir
    text = (wd / "trace.txt").read_text()
    assert all(f"before-{n}" in text for n in range(3))
    assert not any(f"after-{n}" in text for n in range(3))
    assert glob in console_lines(text)[-1]
    assert text.rstrip().splitlines()[-1].endswith(f"test {glob} line")  # the last record
    report = subprocess.run(
        ["trace-cmd", "report", str(wd / "trace.dat")], check=True, capture_output=True, text=True
    ).stdout
    assert "before-2" in report and "after-0" not in report and glob in report
    assert det["trace_dat"] == "written" and not (wd / "raw/partial.dat").exists()
    assert (wd / "raw/events/header_page").stat().st_size > 0
    assert (wd / "raw/events/sched/sched_switch/format").exists()
    assert sorted(p.name for p in (wd / "raw").glob("cpu*")) == [f"cpu{n}" for n in tracefs.cpu_ids()]
    assert not inst.exists() and det["instance_removed"] is True
    window = c.ctx.window
    assert started - 1 < window["first"] <= window["last"] < time.time() + 1
    assert det["trace_clock"] == "boot" and isinstance(det["clock_offset_s"], float)
    assert sum(s["entries"] for s in det["cpu_stats"]) >= 4
    assert det["events_enabled"] == ["sched:sched_switch", "ftrace:print"]


def test_stop_freezes_from_user_space(make):
    c = make(events=["ftrace:print"], freeze_on=[])
    c.start()
    inst = c._inst
    assert inst.tracing_on and c.ctx.details["freeze_mode"] == "user-space"
    write_marker_if_on(inst, "kept")
    c.stop()
    assert inst.tracing_on is False and c.ctx.details["frozen_by"] == "stop"
    write_marker_if_on(inst, "dropped")
    c.finalize()
    text = (c.ctx.workdir / "trace.txt").read_text()
    assert "kept" in text and "dropped" not in text
    assert not inst.exists()
    c.cleanup()  # idempotent


def test_finalize_removes_instance_when_it_fails(make):
    c = make(events=["ftrace:print"])
    c.start()
    (c.ctx.workdir / "raw").write_text("in the way")  # the raw dump cannot create raw/
    c.stop()
    with pytest.raises(OSError):
        c.finalize()
    assert not c._inst.exists()


def test_without_trace_cmd_raw_and_text_are_kept(make, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # trace-cmd not installed
    c = make(events=["ftrace:print"])
    problems = c.preflight()
    assert any("trace-cmd not installed" in p.message and not p.fatal for p in problems)
    c.start()
    write_marker_if_on(c._inst, "no-trace-cmd-here")
    c.stop()
    c.finalize()
    wd = c.ctx.workdir
    assert not (wd / "trace.dat").exists() and "not installed" in c.ctx.details["trace_dat"]
    assert "no-trace-cmd-here" in (wd / "trace.txt").read_text()
    assert sum(p.stat().st_size for p in (wd / "raw").glob("cpu*")) > 0


def test_stale_instance_reported_in_dry_run_and_removed_for_real(make):
    name = unique("sct_stale")
    TraceInstance(name).create()
    dry = make(dry_run=True, instance=name, events=["ftrace:print"])
    problems = [p for p in dry.preflight() if "stale" in p.message]
    assert len(problems) == 1 and not problems[0].fatal and "real run removes" in problems[0].message
    assert TraceInstance(name).exists()
    real = make(instance=name, events=["ftrace:print"])
    problems = [p for p in real.preflight() if "stale" in p.message]
    assert len(problems) == 1 and not problems[0].fatal and "removed" in problems[0].message
    assert not TraceInstance(name).exists()


def test_missing_events_are_clear_problems(make):
    assert not (ROOT / "events/scoutfs").exists(), "the test VM has no scoutfs module"
    c = make(events=["scoutfs:*", "sched:no_such_event"])
    fatal = [p for p in c.preflight() if p.fatal]
    assert any("scoutfs kernel module not loaded" in p.message and p.fix == "modprobe scoutfs" for p in fatal)
    assert any("sched:no_such_event" in p.message and "available_events" in p.fix for p in fatal)
    assert not TraceInstance(c.options.instance).exists()


def test_bad_freeze_glob_is_refused(make):
    c = make(events=["ftrace:print"], freeze_on=['*say "hi"*'])
    assert any(p.fatal and "freeze_on" in p.message for p in c.preflight())


def test_record_mode_preflight_says_trace_cmd_cannot_record(make):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    c = make(mode="record", events=["ftrace:print"])
    problems = c.preflight()
    fatal = [p for p in problems if p.fatal and "trace-cmd cannot record" in p.message]
    assert len(fatal) == 1 and "Can't enable ftrace" in fatal[0].message
    assert "mode: ring" in fatal[0].fix
    assert not TraceInstance(c.options.instance).exists()
    assert proc.live_children() == []
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


def test_disk_estimate_and_docs():
    opts = options.build(Ftrace.Options, {"buffer_size_kb": 1000})
    ctx = PluginContext(
        name="f", type_name="ftrace", target=Target("127.0.0.1", 1), workdir=Path("/nonexistent")
    )
    est = Ftrace(ctx, opts).disk_estimate()
    assert est >= 1000 * 1024 * len(tracefs.cpu_ids()) * 2
    doc = Ftrace.__doc__ or ""
    for word in ("WHAT IT CHANGES ON THE SYSTEM", "OVERHEAD", "REQUIREMENTS"):
        assert word in doc
    with pytest.raises(options.OptionError):
        options.build(Ftrace.Options, {"mode": "stream"})


def test_full_ring_is_copied_raw_first_then_text_from_trace_dat(make, monkeypatch):
    monkeypatch.setattr(ftrace_plugin, "TEXT_FIRST_BYTES", 0)  # any ring counts as "full"
    c = make(events=["ftrace:print"])
    started = time.time()
    c.start()
    write_marker_if_on(c._inst, "raw-first-marker")
    c.stop()
    c.finalize()
    det, wd = c.ctx.details, c.ctx.workdir
    assert det["trace_txt"] == "trace-cmd report" and det["trace_dat"] == "written"
    assert "raw-first-marker" in (wd / "trace.txt").read_text()
    assert started - 1 < c.ctx.window["first"] <= c.ctx.window["last"] < time.time() + 1
    assert not c._inst.exists()


def test_bad_instance_name_is_a_problem(make):
    c = make(instance="a/b", events=["ftrace:print"])
    assert any(p.fatal and "instance" in p.message for p in c.preflight())
