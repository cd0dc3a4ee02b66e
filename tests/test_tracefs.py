"""scoutfs_collect.system.tracefs against the real kernel: private instances only."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
from pathlib import Path

import pytest

from scoutfs_collect.system import tracefs
from scoutfs_collect.system.tracefs import CpuStats, TracefsError, TraceInstance
from tests.support.helpers import unique, wait_for, write_marker_if_on

ROOT = tracefs.DEFAULT_ROOT

pytestmark = pytest.mark.usefixtures("tracefs_untouched")


@pytest.fixture
def inst():
    i = TraceInstance(unique("sct_tfs"))
    i.create()
    yield i
    if i.exists():
        i.remove()


def test_find_root_prefers_sys_kernel_tracing():
    mounts = (
        "none /sys/kernel/debug/tracing tracefs rw 0 0\n"
        "nodev /sys/kernel/tracing tracefs rw 0 0\nproc /proc proc rw 0 0\n"
    )
    assert tracefs.find_root(mounts) == ROOT
    assert tracefs.find_root("none /x/tracing tracefs rw 0 0\n") == Path("/x/tracing")
    assert tracefs.find_root("proc /proc proc rw 0 0\n") is None
    assert tracefs.ensure_mounted(dry_run=True) == (ROOT, False)  # mounted on this VM


@pytest.mark.parametrize("name", ["", "a/b", ".", "..", "x\x00"])
def test_bad_instance_names_refused(name):
    with pytest.raises(ValueError):
        TraceInstance(name)


@pytest.mark.parametrize("spec", ["", ":x", "a/b:c", "..:x", "sys:.."])
def test_bad_event_specs_refused(spec):
    with pytest.raises(ValueError):
        tracefs.split_event(spec)


def test_create_list_remove(inst):
    assert inst.exists() and inst.name in tracefs.list_instances()
    with pytest.raises(FileExistsError):
        inst.create()
    assert inst.remove() is True
    assert not inst.exists() and inst.name not in tracefs.list_instances()
    assert inst.remove() is False  # already gone


def test_remove_retries_while_a_reader_holds_the_instance(inst):
    fd = os.open(inst.path / "per_cpu/cpu0/trace_pipe_raw", os.O_RDONLY | os.O_NONBLOCK)
    with pytest.raises(OSError) as err:
        inst.remove(timeout=0.1)
    assert err.value.errno == errno.EBUSY
    timer = threading.Timer(0.2, os.close, args=(fd,))
    timer.start()
    try:
        assert inst.remove(timeout=3.0) is True
    finally:
        timer.join()
    assert not inst.exists()


def test_settings_stay_in_the_instance(inst):
    assert 2048 <= inst.set_buffer_size_kb(2048) < 2048 + 16  # rounded up to whole pages
    clocks, current = inst.trace_clocks()
    assert "boot" in clocks and current == "local"
    inst.set_trace_clock("boot")
    assert inst.trace_clocks()[1] == "boot"
    inst.tracing_on = False
    assert inst.tracing_on is False
    inst.tracing_on = True
    assert inst.tracing_on is True
    assert inst.option("overwrite") is True


def test_enable_events_reports_missing(inst):
    sel = inst.enable_events(
        ["sched:sched_switch", "ftrace:print", "irq:*", "sched:no_such_event", "no_such_system:*"]
    )
    assert sel.enabled == ["sched:sched_switch", "ftrace:print", "irq:*"]
    assert sel.missing == ["sched:no_such_event", "no_such_system:*"]
    assert inst.read("events/sched/sched_switch/enable").strip() == "1"
    assert inst.read("events/irq/enable").strip() == "1"
    assert tracefs.event_exists(ROOT / "events", "sched:sched_switch")
    assert not tracefs.event_exists(ROOT / "events", "nope:*")


def test_trigger_set_and_error_log(inst):
    inst.enable_events(["printk:console"])
    assert inst.trigger("printk:console") == ""
    inst.set_trigger("printk:console", 'traceoff if msg ~ "*abc*"')
    assert inst.trigger("printk:console") == 'traceoff:unlimited if msg ~ "*abc*"'
    with pytest.raises(TracefsError, match="error_log:.*(quote|Missing)"):
        inst.set_trigger("printk:console", 'traceoff if msg ~ "*a"b*"')


def test_markers_text_trace_and_stats(inst, tmp_path):
    inst.set_trace_clock("boot")
    for n in range(5):
        inst.write_marker(f"marker-{n}")
    inst.tracing_on = False
    write_marker_if_on(inst, "late-marker")
    stats = inst.cpu_stats()
    assert sum(s.entries for s in stats) == 5 and sum(s.bytes for s in stats) > 0
    span = inst.read_trace(tmp_path / "trace.txt")
    text = (tmp_path / "trace.txt").read_text()
    assert span.lines == 5 and "marker-4" in text and "late-marker" not in text
    assert span.first is not None and span.first <= span.last
    # Reading the text trace does not consume it.
    assert sum(s.entries for s in inst.cpu_stats()) == 5


def test_cpu_stats_parse():
    text = (
        "entries: 3\noverrun: 7\ncommit overrun: 1\nbytes: 96\n"
        "oldest event ts:   12.500000\nnow ts:   13.0\ndropped events: 2\nread events: 0\n"
    )
    assert CpuStats.parse(1, text) == CpuStats(1, 3, 7, 1, 96, 2, 12.5)


def test_raw_dump_with_headers_restores_to_trace_dat(inst, tmp_path):
    inst.enable_events(["sched:sched_switch"])
    inst.write_marker("raw-marker-one")
    inst.tracing_on = False
    raw = tmp_path / "raw"
    written = inst.dump_raw(raw)
    assert sorted(written) == tracefs.cpu_ids() and sum(written.values()) > 0
    assert sum(s.entries for s in inst.cpu_stats()) == 0  # the raw read consumed it
    copied = inst.save_headers(raw, ["sched:sched_switch"])
    for rel in (
        "events/header_page",
        "events/header_event",
        "events/ftrace/print/format",
        "events/sched/sched_switch/format",
        "instance.trace_clock",
    ):
        assert rel in copied and (raw / rel).stat().st_size > 0
    tc = tracefs.trace_cmd()
    assert tc is not None, "trace-cmd is installed on the test VM"
    subprocess.run([tc, "restore", "-c", "-o", raw / "p.dat"], check=True, capture_output=True)
    cpus = [raw / f"cpu{c}" for c in sorted(written)]
    subprocess.run(
        [tc, "restore", "-i", raw / "p.dat", "-o", tmp_path / "t.dat", *cpus], check=True, capture_output=True
    )
    report = subprocess.run(
        [tc, "report", tmp_path / "t.dat"], check=True, capture_output=True, text=True
    ).stdout
    assert "raw-marker-one" in report


def test_clear_empties_the_ring(inst):
    inst.write_marker("to-be-cleared")
    assert wait_for(lambda: sum(s.entries for s in inst.cpu_stats()) == 1)
    inst.clear()
    assert sum(s.entries for s in inst.cpu_stats()) == 0


def test_paths_cannot_leave_the_instance(inst):
    for rel in ("../../tracing_on", "/sys/kernel/tracing/tracing_on"):
        with pytest.raises(ValueError):
            inst.write(rel, "0")


def test_top_level_is_read_and_never_turned_off():
    top = tracefs.TopLevel()
    assert top.tracing_on == ((ROOT / "tracing_on").read_text().strip() == "1")
    with pytest.raises(ValueError):
        top.tracing_on = False  # the fixture checks the file did not change


def test_offline_cpu_stats_and_raw_are_an_empty_cpu(inst, tmp_path, monkeypatch):
    """Documented fake: an offline CPU's per_cpu files fail with ENODEV (4.18: the ring
    exists only for online CPUs). This VM has none and offlining one is a host-wide change,
    so the last CPU's stats read and trace_pipe_raw open raise ENODEV; the rest is real."""
    offline = tracefs.cpu_ids()[-1]
    enodev = OSError(errno.ENODEV, os.strerror(errno.ENODEV))
    real_read, real_open = TraceInstance.read, tracefs._open_pipe_raw

    def read(self, rel):
        if rel == f"per_cpu/cpu{offline}/stats":
            raise enodev
        return real_read(self, rel)

    def open_pipe_raw(path):
        if path.parent.name == f"cpu{offline}":
            raise enodev
        return real_open(path)

    monkeypatch.setattr(TraceInstance, "read", read)
    monkeypatch.setattr(tracefs, "_open_pipe_raw", open_pipe_raw)
    stats = {s.cpu: s for s in inst.cpu_stats()}
    assert stats[offline] == CpuStats(offline, ring=False)
    written = inst.dump_raw(tmp_path / "raw")
    assert sorted(written) == tracefs.cpu_ids() and written[offline] == 0
    assert (tmp_path / "raw" / f"cpu{offline}").read_bytes() == b""
    assert inst.cpus_without_ring == {offline}
