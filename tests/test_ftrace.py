"""The ftrace collector on the real kernel: private instances, real /dev/kmsg lines."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from scoutfs_collect.builtin_plugins.collectors.ftrace import Ftrace
from scoutfs_collect.plugin import options
from scoutfs_collect.plugin.api import PluginContext, Target
from scoutfs_collect.system import ftrace_freeze, proc, tracefs
from scoutfs_collect.system.ftrace_freeze import CONSOLE, SELFTEST_TAG
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


def test_persist_writes_the_raw_pages_then_finalize_the_text_from_trace_dat(make):
    """After every stop the raw pages are written and fsync'ed in persist() (they consume
    the ring), and the text comes from trace.dat."""
    c = make(events=["ftrace:print"])
    started = time.time()
    c.start()
    write_marker_if_on(c._inst, "raw-first-marker")
    c.stop()
    c.persist()
    det, wd = c.ctx.details, c.ctx.workdir
    on_disk = sum(p.stat().st_size for p in (wd / "raw").glob("cpu*"))
    assert det["raw_bytes"] > 0 and on_disk == det["raw_bytes"]
    assert not (wd / "trace.txt").exists()  # nothing slower before durable
    c.finalize()
    assert det["trace_txt"] == "trace-cmd report" and det["trace_dat"] == "written"
    assert "raw-first-marker" in (wd / "trace.txt").read_text()
    assert started - 1 < c.ctx.window["first"] <= c.ctx.window["last"] < time.time() + 1
    assert not c._inst.exists()


def test_bad_instance_name_is_a_problem(make):
    c = make(instance="a/b", events=["ftrace:print"])
    assert any(p.fatal and "instance" in p.message for p in c.preflight())


# --- which in-kernel freeze is armed, and never a global change ------------------------------

def _stopped_by_console_line(inst: TraceInstance, glob: str) -> bool:
    kmsg_write(f"scoutfs f.000000.r.000000: test {glob} line")
    return not inst.tracing_on


@pytest.mark.parametrize("release", ["4.18.0-240.el8.x86_64", "5.14.0-362.8.1.el9_3.x86_64"])
def test_el8_el9_kernels_never_arm_the_global_console_trigger(make, monkeypatch, release):
    """On RHEL 8 and 9 an event-trigger traceoff stops the host's top-level ring (before 5.17):
    the printk:console trigger is neither self-tested nor armed there, by kernel version.
    The release is faked; the instance, its trigger file and the kernel log line are real."""
    monkeypatch.setattr(ftrace_freeze, "kernel_release", lambda: release)
    glob = unique("elfreeze")
    c = make(events=["ftrace:print"], freeze_on=[f"*{glob}*"], freeze_functions=[])
    c.start()
    det, inst = c.ctx.details, c._inst
    assert det["freeze_mode"] == "user-space" and det["freeze_trigger"] == ""
    why = det["freeze_why"][CONSOLE]
    assert "top-level ring before 5.17" in why and release in why
    assert det["self_test"]["result"] == "skipped"
    assert inst.trigger(CONSOLE) == ""
    assert f"instance {inst.name}" not in inst.read("trace")  # no self-test line of ours was logged
    assert not _stopped_by_console_line(inst, glob)  # nothing armed: the stop comes from user space
    c.stop()
    assert det["frozen_by"] == "stop"
    c.finalize()


def test_self_test_undoes_a_global_traceoff_and_disarms(make, monkeypatch):
    """The 4.18 failure (the self-test line stops the host's top-level ring, not ours) cannot
    happen on this kernel (traceoff is per instance since 5.17), and a test must never stop
    the host's real top-level ring. So the "top level" the self-test watches is a second
    private instance, made to stop on the self-test line by its own trigger -- what a
    global traceoff does to the real top level. The self-test must turn it back on, take
    our trigger off again and record that traceoff is global here."""
    top = TraceInstance(unique("sct_top"))
    top.create()
    try:
        top.enable_events([CONSOLE])
        name = unique("sct_ft")  # only our self-test line names it (other runs log theirs)
        top.set_trigger(CONSOLE, f'traceoff if msg ~ "*{SELFTEST_TAG}*instance {name}*"')
        monkeypatch.setattr(ftrace_freeze, "TopLevel", lambda root: top)
        glob = unique("globalfreeze")
        c = make(instance=name, events=["ftrace:print"], freeze_on=[f"*{glob}*"], freeze_functions=[])
        c.start()
        det, inst = c.ctx.details, c._inst
        test = det["self_test"]
        assert test["result"] == "failed" and test["traceoff_global"] is True
        assert test["trigger_removed"] is True and "top-level ring" in test["error"]
        assert top.tracing_on is True  # our change undone
        assert inst.trigger(CONSOLE) == "" and det["freeze_trigger"] == ""
        assert det["freeze_mode"] == "user-space" and det["freeze_why"][CONSOLE].startswith("not armed")
        assert inst.tracing_on and not _stopped_by_console_line(inst, glob)
        c.stop()
        c.finalize()
    finally:
        top.remove()


def test_function_probe_stops_only_the_instance(make):
    """A FUNC:traceoff probe on a real, rarely called kernel function the test calls itself
    (personality(2)): the instance stops in the kernel, the top level does not, and the
    probe goes with the instance. Kernels in lockdown refuse set_ftrace_filter (EPERM)."""
    func = "__x64_sys_personality"
    why = ftrace_freeze.function_blocker(ROOT, func)
    if why:
        pytest.skip(f"no function probes on this kernel: {why}")
    c = make(events=["ftrace:print"], freeze_on=[], freeze_functions=[func])
    c.start()
    det, inst = c.ctx.details, c._inst
    assert det["freeze_mode"] == "function-probe" and det["freeze_probes"] == [func]
    assert f"{func}:traceoff" in inst.read("set_ftrace_filter")
    top_on = (ROOT / "tracing_on").read_text()
    write_marker_if_on(inst, "before-call")
    assert inst.tracing_on
    ctypes.CDLL(None, use_errno=True).personality(0xFFFFFFFF)  # query only: changes nothing
    assert inst.tracing_on is False
    assert (ROOT / "tracing_on").read_text() == top_on
    write_marker_if_on(inst, "after-call")
    c.stop()
    assert det["frozen_by"] == "in-kernel trigger"
    c.finalize()
    text = (c.ctx.workdir / "trace.txt").read_text()
    assert "before-call" in text and "after-call" not in text
    assert not inst.exists() and "freeze_probe_errors" not in det


def test_function_probe_not_armed_is_explained(make):
    """A function this kernel does not have (or a kernel that refuses function probes, as
    this CI host does) arms nothing and says why; the run goes on."""
    func = unique("scoutfs_no_such_function")
    c = make(events=["ftrace:print"], freeze_functions=[func])
    c.start()
    det = c.ctx.details
    assert det["freeze_probes"] == [] and det["freeze_functions"] == [func]
    assert det["freeze_why"][f"{func}:traceoff"].startswith("not armed: ")
    assert det["freeze_mode"] == "in-kernel"  # the printk:console trigger still is
    c.stop()
    c.finalize()


def test_function_probe_is_appended_and_removed_documented_fake(tmp_path, monkeypatch):
    """Documented fake: this CI kernel refuses set_ftrace_filter (lockdown, EPERM), so the
    probe's write is checked on plain files laid out as tracefs: it is appended (a
    truncating open would wipe the filter and probes others set) and removed with `!`."""
    root = tmp_path / "tracing"
    (root / "instances/x").mkdir(parents=True)
    (root / "set_ftrace_filter").write_text("")
    (root / "available_filter_functions").write_text("other_func\nscoutfs_fence_start [scoutfs]\n")
    (root / "instances/x/set_ftrace_filter").write_text("other_func:traceoff:unlimited\n")
    (tmp_path / "ftrace_enabled").write_text("1\n")
    monkeypatch.setattr(ftrace_freeze, "FTRACE_ENABLED", tmp_path / "ftrace_enabled")
    inst = TraceInstance("x", root)
    freeze = ftrace_freeze.arm(inst, [], ["scoutfs_fence_start", "missing_func"])
    assert freeze.probes == ["scoutfs_fence_start"] and freeze.mode == "function-probe"
    assert "not in available_filter_functions" in freeze.why["missing_func:traceoff"]
    assert inst.read("set_ftrace_filter") == "other_func:traceoff:unlimited\nscoutfs_fence_start:traceoff\n"
    # a plain file keeps what was written: the removal is written, and the check that reads
    # the filter back afterwards says the probe is still listed (the kernel drops it)
    assert ftrace_freeze.disarm_probes(inst, freeze.probes) == [
        "scoutfs_fence_start:traceoff still listed in set_ftrace_filter after !scoutfs_fence_start:traceoff"]
    assert inst.read("set_ftrace_filter").endswith(":traceoff\n!scoutfs_fence_start:traceoff\n")
    (tmp_path / "ftrace_enabled").write_text("0\n")
    assert "ftrace_enabled is 0" in ftrace_freeze.function_blocker(root, "other_func")


def test_probes_are_read_back_as_the_kernel_lists_them():
    """What an instance's set_ftrace_filter held on 4.18.0-513.9.1.el8_9 (read in a guest)
    after `scoutfs_fence_start:traceoff` and `vfs_read:traceoff` were appended: a module's
    function is listed with its module (%ps), every probe with its count."""
    text = ("#### all functions enabled ####\n"
            "scoutfs_fence_start [scoutfs]:traceoff:unlimited\n"
            "vfs_read:traceoff:unlimited\n"
            "ksys_read:traceon:count=3\n"
            "*:mod:xfs\n")
    probes = ftrace_freeze.listed_probes(text)
    assert [(p.function, p.module, p.command) for p in probes] == [
        ("scoutfs_fence_start", "scoutfs", "traceoff"), ("vfs_read", "", "traceoff"),
        ("ksys_read", "", "traceon")]


def test_check_says_which_freeze_and_refuses_globs_as_functions(make):
    dry = make(dry_run=True, events=["ftrace:print"], freeze_functions=["scoutfs_fence_start"])
    (plan,) = [p for p in dry.preflight() if "ftrace freeze planned" in p.message]
    assert not plan.fatal and "scoutfs_fence_start:traceoff: not armed" in plan.message  # no scoutfs here
    assert "printk:console: self-tested at start" in plan.message
    assert not TraceInstance(dry.options.instance).exists()
    bad = make(events=["ftrace:print"], freeze_functions=["scoutfs_*"])
    assert any(p.fatal and "freeze_functions" in p.message for p in bad.preflight())


def test_console_version_gate():
    assert "before 5.17" in ftrace_freeze.console_blocker("4.18.0-240.el8.x86_64")
    assert "before 5.17" in ftrace_freeze.console_blocker("5.14.0-362.8.1.el9_3.x86_64")
    assert "before 5.19" in ftrace_freeze.console_blocker("5.18.3")
    assert ftrace_freeze.console_blocker("5.19.0") == "" == ftrace_freeze.console_blocker("6.18.44-fc")


def test_offline_cpu_is_an_empty_cpu_not_a_failed_finalize(make, monkeypatch):
    """Documented fake: per_cpu/cpuN exists for every possible CPU, the ring only for online
    ones, and an offline CPU's trace_pipe_raw fails with ENODEV (seen on 4.18). This VM has
    no offline CPU and offlining one is a host-wide change, so the last CPU's open fails
    with ENODEV here; the ring, the marker and trace-cmd are real."""
    cpus = tracefs.cpu_ids()
    assert len(cpus) >= 2, "the test VM has 2 CPUs"
    offline = cpus[-1]
    real_open = tracefs._open_pipe_raw

    def open_pipe_raw(path):
        if path.parent.name == f"cpu{offline}":
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV), str(path))
        return real_open(path)

    monkeypatch.setattr(tracefs, "_open_pipe_raw", open_pipe_raw)
    affinity = os.sched_getaffinity(0)
    c = make(events=["ftrace:print"])
    c.start()
    try:
        os.sched_setaffinity(0, {cpus[0]})  # the marker lands in an online CPU's ring
        write_marker_if_on(c._inst, "online-cpu-marker")
    finally:
        os.sched_setaffinity(0, affinity)
    c.stop()
    c.finalize()
    det, wd = c.ctx.details, c.ctx.workdir
    assert det["cpus_without_ring"] == [offline] and det["trace_dat"] == "written"
    assert (wd / f"raw/cpu{offline}").stat().st_size == 0
    assert "online-cpu-marker" in subprocess.run(["trace-cmd", "report", str(wd / "trace.dat")],
                                                  capture_output=True, text=True, check=True).stdout
