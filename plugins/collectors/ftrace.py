"""The ``ftrace`` collector: scoutfs trace events in a private ring, frozen in-kernel."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Dict, List, Optional

import psutil

from scoutfs_collect import (
    ChildProcess,
    Collector,
    Problem,
    directory_size,
    fsync_path,
    hookimpl,
    option,
    run_command,
)
from scoutfs_collect.system import ftrace_freeze, proc, tracecmd, tracefs
from scoutfs_collect.system.ftrace_freeze import CONSOLE, FTRACE_ENABLED
from scoutfs_collect.system.tracefs import TracefsError, TraceInstance

INSTALL = "dnf install trace-cmd (RHEL/Rocky) or apt-get install trace-cmd (Debian/Ubuntu)"
FENCING = ["*reconnect timed out, fencing*", "*server closing*"]


@dataclasses.dataclass
class FtraceOptions:
    instance: str = option("scoutfs_collect", "Name of the private tracefs instance (instances/NAME).")
    buffer_size_kb: int = option(10240, "Ring buffer size per CPU in KiB (memory used: this x CPUs).")
    events: List[str] = option(["scoutfs:*"], "Trace events to record, as SYSTEM:* or SYSTEM:EVENT.")
    freeze_on: List[str] = option(FENCING, "Kernel log globs that stop the ring in-kernel at once "
                                  "(printk:console trigger; kernels >= 5.19 only, see the docstring).")
    freeze_functions: List[str] = option(
        ["scoutfs_fence_start"], "Kernel functions whose every call stops the ring in-kernel "
        "(a FUNC:traceoff probe; scoutfs_fence_start runs right after each fencing line).")
    mode: str = option("ring", "ring: in memory; record: trace-cmd record to disk.", ("ring", "record"))
    record_max_kb: int = option(51200, "record mode: per-CPU cap of trace-cmd's files (record -m).")


def note(message: str) -> Problem:
    return Problem(message, fatal=False)


class Ftrace(Collector):
    """Records kernel trace events (default: all scoutfs events) in a private ftrace
    ring buffer holding the most recent history in memory, frozen by the kernel itself
    when scoutfs fences (in-kernel `traceoff`), else from user space by the run's trigger.

    Output: trace.txt (text), trace.dat (if trace-cmd is installed; `trace-cmd report`,
    KernelShark), raw/ (the per-CPU ring pages with the event formats and headers to
    rebuild trace.dat anywhere, see raw/RESTORE; an offline CPU, which has no ring, gets
    an empty cpuN). Manifest details: events, buffer size, freeze_mode, freeze_why (one
    line per freeze mechanism: armed or not, and why), self_test, per-CPU
    entries/overruns, cpus_without_ring, clock offset to epoch.

    FREEZE, strongest first (scoutfs_collect/system/ftrace_freeze.py has the kernel facts):
    - in-kernel: a `traceoff if msg ~ GLOB` trigger on the instance's printk:console for
      every freeze_on glob. Only on kernels >= 5.19: before 5.17 an event trigger's
      traceoff stops the host's *top-level* ring, not ours (RHEL 8 and 9 up to 9.3 are
      so), and before 5.19 printk:console misses lines below the console loglevel. A
      self-test line must stop this instance and leave the top-level tracing_on alone;
      if it stopped the top level, that is turned back on and the trigger removed.
    - function-probe: `FUNC:traceoff` appended to the instance's set_ftrace_filter for
      each of freeze_functions (default scoutfs_fence_start, which scoutfs calls right
      after logging each of its three fencing lines: reconnect timed out, recovery
      timeout expired, fencing previous leader). Stops only this instance, on 4.18
      already; armed where kernel.ftrace_enabled is 1 and the function is in
      available_filter_functions (scoutfs loaded); a kernel in lockdown refuses it.
    - user-space: always; the run's trigger stops the instance (a few ms later).
    `server closing` has no in-kernel freeze below 5.19: no function runs only after
    that line (it is logged by scoutfs_net_shutdown_worker, which runs for every
    connection shutdown and before the line, so a probe there freezes too early and on
    lines nobody asked for); a traceoff trigger on the scoutfs:scoutfs_conn_shutdown_start
    tracepoint could be filtered but is global before 5.17; a `snapshot` trigger there is
    per instance even on 4.18, but it doubles the ring's memory (a second buffer), splits
    the history into two buffers every reader (trace.dat, trace.txt, raw/, the analysis)
    would have to merge, and re-fires at every later connection shutdown: not done.

    WHAT IT CHANGES ON THE SYSTEM: creates tracefs instance instances/NAME (its buffer
    size, events, `boot` trace clock, the freeze above: a printk:console trigger and/or
    traceoff probes in its set_ftrace_filter, which make the kernel patch each probed
    function's entry, listed in the top-level enabled_functions) and removes all of it
    at the end, also a leftover of a killed run (rmdir removes the probes too). It
    never changes a global ftrace setting; the one global write turns the top-level
    tracing_on back on if our self-test line turned it off. trace.dat is built with
    trace-cmd restore, not extract (which resets global state); restore briefly sets
    kernel.kptr_restrict to 0 to read symbols and restores it. Mounts tracefs on
    /sys/kernel/tracing if unmounted. Logs one self-test line
    (scoutfs-collect-ftrace-selftest-...) to the kernel log at start, on kernels >= 5.19.
    mode: record runs `trace-cmd record -B NAME` (tested only where trace-cmd works;
    trace-cmd may reset global tracing settings when it exits).

    OVERHEAD: ~64 ns per event hit; buffer_size_kb x CPUs of kernel memory. A traceoff
    probe adds the ftrace trampoline to each call of its function (scoutfs_fence_start
    runs once per fence). In ring mode nothing is written to disk and nothing polls
    until the run ends; then the raw copy takes ~7 ms per 8 MiB, the text ~1 s per
    16 MiB of ring. A failed self-test costs ~120 ms at start (removing the trigger).

    REQUIREMENTS: root; tracefs (CONFIG_FTRACE); the scoutfs module for scoutfs:*
    events and scoutfs_fence_start (modprobe scoutfs); trace-cmd for trace.dat and
    record mode (dnf install trace-cmd / apt-get install trace-cmd). Function probes:
    CONFIG_DYNAMIC_FTRACE (RHEL has it), kernel.ftrace_enabled = 1, no lockdown.
    `scoutfs-collect check` says in a note which freeze a run would arm and why.
    """

    type_name = "ftrace"
    Options = FtraceOptions
    _root: Optional[Path] = None
    _inst: Optional[TraceInstance] = None
    _created = False
    _finalized = False
    _clock_offset: Optional[float] = None
    _child: Optional[ChildProcess] = None
    _raw_written: Optional[Dict[int, int]] = None  # the raw pages, once on disk
    _probes: List[str] = []  # functions with our traceoff probe armed
    _events: List[str] = []  # replaced, never mutated

    # --- preflight ------------------------------------------------------------------
    def disk_estimate(self) -> int:
        """ring: raw copy (1x) + text (~3.5x measured) + trace.dat (<=1x) + symbols;
        record: trace-cmd's two half files per CPU."""
        o = self.options
        kb = o.record_max_kb * 2 if o.mode == "record" else o.buffer_size_kb * 5
        return kb * 1024 * self._ncpus() + (16 << 20)

    def _ncpus(self) -> int:
        return len(tracefs.cpu_ids(self._root or tracefs.DEFAULT_ROOT))

    def preflight(self) -> List[Problem]:
        o, dry, fix_globs = self.options, self.ctx.dry_run, "fix freeze_on in the profile"
        bad = [g for g in o.freeze_on if not g or '"' in g or "\n" in g]
        out = [Problem(f'bad freeze_on glob {g!r} (empty, " or newline)', fix_globs) for g in bad]
        out += [Problem(f"bad freeze_functions name {f!r}: one function name, no glob",
                        "fix freeze_functions in the profile")
                for f in ftrace_freeze.bad_function_names(o.freeze_functions)]
        if os.geteuid() != 0:
            out.append(Problem("ftrace needs root (tracefs and /dev/kmsg)", "run as root"))
        if o.buffer_size_kb <= 0 or o.record_max_kb <= 0:
            out.append(Problem("buffer_size_kb and record_max_kb must be positive"))
        try:
            inst = TraceInstance(o.instance)
            self._root, mounted = tracefs.ensure_mounted(dry_run=dry)
        except ValueError as exc:
            return out + [Problem(str(exc), "fix instance in the profile")]
        except TracefsError as exc:
            return out + [Problem(str(exc), "mount -t tracefs nodev /sys/kernel/tracing")]
        if mounted:
            out.append(note(f"tracefs {'will be' if dry else 'was not mounted:'} mounted at {self._root}"))
            if dry:
                return out
        if not (self._root / "instances").is_dir():
            return out + [Problem("kernel without ftrace instances", "use a kernel 3.10 or later")]
        out += self._preflight_stale(TraceInstance(inst.name, self._root)) + self._preflight_events()
        need, avail = o.buffer_size_kb * 1024 * self._ncpus(), psutil.virtual_memory().available
        if need > avail:
            why = f"{o.buffer_size_kb} KiB x {self._ncpus()} CPUs"
            out.append(Problem(f"buffer needs {need >> 20} MiB ({why}), {avail >> 20} MiB free", "lower it"))
        if tracefs.trace_cmd() is None:
            what = "mode record needs it" if o.mode == "record" else "no trace.dat, only raw and text"
            out.append(Problem(f"trace-cmd not installed: {what}", INSTALL, fatal=o.mode == "record"))
        elif o.mode == "record" and (why := trace_cmd_record_blocker()):
            out.append(Problem(f"trace-cmd cannot record on this host: {why}", "use mode: ring"))
        return out

    def _preflight_stale(self, inst: TraceInstance) -> List[Problem]:
        """An instance with our name is removed only when its owner is provably dead: in a
        real run we hold the host lock (no other scoutfs-collect lives) and no process
        holds a file of the instance open. ``check`` never removes anything."""
        if not inst.exists():
            return []
        holders = proc.holders_below(inst.path)
        who = f"pid {', '.join(map(str, holders))}" if holders else ""
        if self.ctx.dry_run:
            live = self.ctx.live_run_pid
            if live:
                return [note(f"tracefs instance {inst.path} belongs to the running scoutfs-collect "
                             f"(pid {live}); check leaves it alone")]
            if holders:
                return [Problem(f"tracefs instance {inst.path} is in use by {who}",
                                "pick another instance name in the profile (instance: NAME)")]
            return [note(f"stale tracefs instance {inst.path} (left by a killed run): a real run removes it")]
        if holders:
            return [Problem(f"tracefs instance {inst.path} is in use by {who}, not by a scoutfs-collect",
                            "pick another instance name in the profile (instance: NAME)")]
        try:
            inst.remove()
        except OSError as exc:
            fix = f"stop what holds it (fuser -v {inst.path}/per_cpu/*/*), then rmdir {inst.path}"
            return [Problem(f"cannot remove stale tracefs instance {inst.path}: {exc.strerror}", fix)]
        return [note(f"removed stale tracefs instance {inst.path} left by a killed run")]

    def _preflight_events(self) -> List[Problem]:
        out, events = [], (self._root or tracefs.DEFAULT_ROOT) / "events"
        for spec in self.options.events:
            try:
                if tracefs.event_exists(events, spec):
                    continue
            except ValueError as exc:
                out.append(Problem(str(exc), "fix events in the profile"))
                continue
            if spec.startswith("scoutfs:") and not (events / "scoutfs").is_dir():
                out.append(Problem(f"scoutfs kernel module not loaded: no event {spec}", "modprobe scoutfs"))
            else:
                fix = f"pick one from {events.parent}/available_events"
                out.append(Problem(f"trace event {spec} does not exist on this kernel", fix))
        if self.ctx.dry_run and not any(p.fatal for p in out):
            plan = ftrace_freeze.plan(events.parent, self.options.freeze_on, self.options.freeze_functions)
            why = "; ".join(f"{k}: {v}" for k, v in plan.why.items())
            out.append(note(f"ftrace freeze planned: {plan.mode} ({why})"))
        return out

    # --- start ----------------------------------------------------------------------
    def start(self) -> None:
        o, det = self.options, self.ctx.details
        self._root = self._root or tracefs.ensure_mounted()[0]
        inst = self._inst = TraceInstance(o.instance, self._root)
        det.update(instance=o.instance, tracefs=str(self._root), mode=o.mode, events_requested=o.events)
        inst.create()
        self._created = True
        try:
            det["buffer_size_kb"] = inst.set_buffer_size_kb(o.buffer_size_kb)
            det["cpus"] = self._ncpus()
            if not inst.option("overwrite"):
                inst.set_option("overwrite", True)
            clock, self._clock_offset = inst.use_epoch_clock()
            det.update(trace_clock=clock, clock_offset_s=self._clock_offset)
            sel = inst.enable_events(list(o.events))
            self._events = sel.enabled
            det.update(events_enabled=sel.enabled, events_missing=sel.missing)
            if sel.missing:
                self.log.warning("%s: events not found: %s", self.ctx.name, sel.missing)
            self._arm_freeze(inst)
            inst.clear()
            inst.tracing_on = True
            if o.mode == "record":
                self._start_record(inst)
            det["started_at"] = time.time()
        except BaseException:
            self.cleanup()
            raise

    def _arm_freeze(self, inst: TraceInstance) -> None:
        o, det = self.options, self.ctx.details
        det.update(freeze_on=list(o.freeze_on), freeze_functions=list(o.freeze_functions))
        freeze = ftrace_freeze.arm(inst, o.freeze_on, o.freeze_functions)
        self._probes = freeze.probes
        test = freeze.self_test
        det.update(self_test=dataclasses.asdict(test), freeze_mode=freeze.mode, freeze_why=freeze.why,
                   freeze_probes=freeze.probes)
        det["freeze_trigger"] = inst.trigger(CONSOLE) if freeze.console else ""
        if test.others_stopped:  # their globs match our nonce line
            self.log.warning("ftrace self-test also stopped %s", test.others_stopped)
        if test.traceoff_global:
            self.log.warning("ftrace: %s", test.error)
        if freeze.mode != "in-kernel" and (o.freeze_on or o.freeze_functions):
            self.log.warning("ftrace freeze: %s; %s", freeze.mode, freeze.why.get(CONSOLE, ""))

    def _start_record(self, inst: TraceInstance) -> None:
        tc, o, wd, det = tracefs.trace_cmd(), self.options, self.ctx.workdir, self.ctx.details
        assert tc is not None
        det["partial_dat"] = run_command([tc, "restore", "-c", "-o", wd / "partial.dat"], 120).returncode == 0
        argv = [tc, "record", "-m", str(o.record_max_kb), "-o", str(wd / "trace.dat"), "-B", inst.name]
        argv += ["-b", str(o.buffer_size_kb)]
        if det.get("trace_clock") in ("boot", "mono"):
            argv += ["-C", det["trace_clock"]]
        for ev in self._events + [CONSOLE]:
            argv += [] if ev.startswith("ftrace:") else ["-e", ev]  # ftrace:* has no enable file
        det["trace_cmd_argv"] = argv
        log = wd / "trace-cmd.log"
        fail = lambda rc: self.ctx.fail(f"trace-cmd record exited by itself ({rc}); see trace-cmd.log")  # noqa: E731
        self._child = ChildProcess(argv, stdout=log, stderr=log, on_unexpected_exit=fail).start()

    # --- stop / persist / finalize ------------------------------------------------------
    def stop(self) -> None:
        inst = self._inst
        if inst is None or not self._created:
            return
        was_on = inst.tracing_on
        inst.tracing_on = False
        self.ctx.details.update(frozen_by="stop" if was_on else "in-kernel trigger", stopped_at=time.time())
        if self._child is not None:
            self._child.send_signal(signal.SIGINT)

    def persist(self) -> None:
        """The ring exists only in kernel memory: its raw pages go to disk and are fsync'ed
        now, after every stop, before the core says ``durable`` (~0.06 s per 20 MiB). The
        raw read consumes the ring, so the text then comes from trace.dat (trace-cmd
        report); without trace-cmd the text is read first (it does not consume), slower."""
        inst = self._inst
        if inst is None or not self._created or self._child is not None or not inst.exists():
            return
        self._save_ring(inst)

    def _save_ring(self, inst: TraceInstance) -> None:
        began = time.monotonic()
        det, wd, raw = self.ctx.details, self.ctx.workdir, self.ctx.workdir / "raw"
        det["cpu_stats"] = [dataclasses.asdict(s) for s in inst.cpu_stats()]
        if tracefs.trace_cmd() is None:
            self._note_span(inst.read_trace(wd / "trace.txt"), "tracefs")
            fsync_path(wd / "trace.txt")
        written = self._raw_written = inst.dump_raw(raw)
        det["cpus_without_ring"] = sorted(inst.cpus_without_ring)
        for cpu in written:
            fsync_path(raw / f"cpu{cpu}")
        fsync_path(raw)
        det.update(raw_bytes=sum(written.values()), raw_durable_s=round(time.monotonic() - began, 6))

    def finalize(self) -> None:
        try:
            self._stop_child()
            inst = self._inst
            if inst is None or not self._created or not inst.exists():
                return
            det, raw = self.ctx.details, self.ctx.workdir / "raw"
            if self._raw_written is None:  # record mode, or persist did not get that far
                self._save_ring(inst)
            written = self._raw_written or {}
            inst.save_headers(raw, self._events + [CONSOLE])
            if self.options.mode == "ring":
                self._make_trace_dat(raw, sorted(written))
            if "trace_txt" not in det:
                self._text_from_trace_dat()
        finally:
            self._finalized = True
            self.cleanup()

    def _note_span(self, span: tracefs.TraceSpan, source: str) -> None:
        self.ctx.details.update(trace_txt=source, trace_txt_events=span.lines)
        off = self._clock_offset
        if off is not None and span.first is not None and span.last is not None:
            self.ctx.set_window(span.first + off, span.last + off)

    def _make_trace_dat(self, raw: Path, cpus: List[int]) -> None:
        """trace.dat from the raw copy; `trace-cmd extract` is not used because it
        resets global tracing state (all events off, top buffer cleared)."""
        det, partial = self.ctx.details, raw / "partial.dat"
        if tracefs.trace_cmd() is None:
            det["trace_dat"] = "not written: trace-cmd not installed"
            return
        cpu_files = [raw / f"cpu{c}" for c in cpus]
        error = tracecmd.restore_trace_dat(cpu_files, self.ctx.workdir / "trace.dat", partial)
        if error:
            det["trace_dat"] = f"failed: {error}"
            return
        partial.unlink()  # 7+ MiB of symbols and formats, all inside trace.dat too
        det["trace_dat"] = "written"

    def _text_from_trace_dat(self) -> None:
        tc, dat, txt = tracefs.trace_cmd(), self.ctx.workdir / "trace.dat", self.ctx.workdir / "trace.txt"
        if tc is None or not dat.exists():
            self.ctx.details["trace_txt"] = "not written: no trace.dat to report"
            return
        # Bounded by the phase timeout: past it the runner's cleanup ends every child, this
        # wait returns, and a text cut short is never recorded as finished (the analysis
        # then reads trace.dat instead).
        child = ChildProcess([tc, "report", dat], stdout=txt).start()
        code = child.wait(1800)
        if code != 0:
            child.stop()
            self.ctx.details["trace_txt"] = f"cut short: trace-cmd report ended with {code}"
            return
        with open(txt, errors="replace") as lines:
            self._note_span(tracefs.text_span(lines), "trace-cmd report")

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is None or child.pid is None:
            return
        self.ctx.details["trace_cmd_exit"] = child.stop(signal.SIGINT, grace=60.0)
        try:  # trace-cmd's per-CPU recorders share its process group
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def cleanup(self) -> None:
        """Stop trace-cmd and remove the instance if it is still there (the runner calls
        this once, on every exit path, also after a failed or skipped start)."""
        try:
            self._stop_child()
        finally:
            inst = self._inst
            if self._created and inst is not None and inst.exists():
                probes, self._probes = self._probes, []
                errors = ftrace_freeze.disarm_probes(inst, probes)  # rmdir would too
                if errors:
                    self.ctx.details["freeze_probe_errors"] = errors
                inst.remove()
                self.ctx.details["instance_removed"] = True

    def bytes_written(self) -> int:
        inst = self._inst
        if self.options.mode == "ring" and inst is not None and not self._finalized:
            try:
                return sum(s.bytes for s in inst.cpu_stats())
            except OSError:
                return 0
        return directory_size(self.ctx.workdir)


def trace_cmd_record_blocker() -> str:
    """Why ``trace-cmd record`` cannot run here, or "". trace-cmd record (3.1) first
    writes 1 to /proc/sys/kernel/ftrace_enabled and dies ("Can't enable ftrace") if that
    fails: this repeats that one write of the value already there (no change), without
    trace-cmd, instance or child process."""
    try:
        if FTRACE_ENABLED.read_text().strip() != "1":
            return "kernel.ftrace_enabled is 0: trace-cmd record would turn function tracing on host-wide"
    except OSError:
        return ""
    try:
        with open(FTRACE_ENABLED, "wb", buffering=0) as f:
            f.write(b"1")
    except OSError as exc:
        return (
            f'writing {FTRACE_ENABLED} fails ({exc.strerror}): trace-cmd record dies "Can\'t enable ftrace"'
        )
    return ""


@hookimpl
def scoutfs_collect_register(register) -> None:
    register.add_collector(Ftrace)
