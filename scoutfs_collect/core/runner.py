"""The run: preflight everything, start collectors, arm triggers, wait, stop, finalize, pack.

The runner owns the lifecycle; plugins only implement phases. Each phase of each
plugin runs under its timeout (:mod:`scoutfs_collect.core.phases`) and its outcome lands
in the manifest, so one broken plugin never costs the data of the others.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from scoutfs_collect.archive import manifest
from scoutfs_collect.archive import write as archive
from scoutfs_collect.archive.manifest import TriggerRecord
from scoutfs_collect.archive.recover import remove_stale_partials
from scoutfs_collect.core import phases
from scoutfs_collect.core.checks import check_lock, check_output_dir, check_root, free_mb, packing_floor
from scoutfs_collect.core.control import ControlServer, StopRequest
from scoutfs_collect.core.errors import EXIT_NO_ARCHIVE, EXIT_OK, EXIT_PLUGIN_FAILED
from scoutfs_collect.core.events import EventLog
from scoutfs_collect.core.instances import PluginInstance, build_instances
from scoutfs_collect.core.phases import Phase, RunState
from scoutfs_collect.core.profile import Profile
from scoutfs_collect.core.registry import Registry
from scoutfs_collect.core.syncer import StreamSyncer
from scoutfs_collect.plugin.api import Problem, Target
from scoutfs_collect.system import proc
from scoutfs_collect.system.lock import Holder, HostLock
from scoutfs_collect.system.paths import fsync_tree, make_workdir, run_stem
from scoutfs_collect.ui.console import Console, human_bytes, human_seconds

log = logging.getLogger("scoutfs_collect")
RUN_LOG = "scoutfs-collect.log"


@dataclasses.dataclass
class RunRequest:
    """Everything the CLI resolved for one run."""

    profile: Profile
    registry: Registry
    target: Target
    argv: List[str]
    events_file: Optional[Path] = None


class Runner:
    """Drives one run. ``preflight()`` first; ``run()`` only after it found nothing fatal."""

    def __init__(self, request: RunRequest, console: Console, dry_run: bool = False) -> None:
        self.req = request
        self.settings = request.profile.settings
        self.output_dir = Path(self.settings.output_dir)
        self.console = console
        self.instances = build_instances(request.profile, request.registry, request.target, dry_run)
        self.collectors = [i for i in self.instances if i.spec.kind == "collector"]
        self.triggers = [i for i in self.instances if i.spec.kind == "trigger"]
        self.lock = HostLock()
        self.events = EventLog(request.events_file)
        self.trigger: Optional[TriggerRecord] = None
        self.triggered = threading.Event()
        self._trigger_lock = threading.Lock()
        self.state = RunState.PREFLIGHT
        self.workdir: Optional[Path] = None
        self.times: Dict[str, Any] = {}
        self.notes: List[str] = []
        self.stale: Optional[Holder] = None
        self.archive_path: Optional[Path] = None  # set once the archive is complete
        self.durable_stop = False  # a stop client waits for "durable" (see request_stop)
        self.control: Optional[ControlServer] = None
        self.syncer: Optional[StreamSyncer] = None
        self._signal_pipe: Optional[Tuple[int, int]] = None  # handle_signal -> _signal_thread
        self._signal_thread: Optional[threading.Thread] = None

    # -- preflight -------------------------------------------------------------------

    def preflight(self) -> List[Tuple[str, Problem]]:
        """Every problem found, fatal or not, each tagged with who found it."""
        found: List[Tuple[str, Problem]] = [("core", p) for p in check_root()]
        found += [("core", p) for p in check_lock(self.lock)]
        estimate = 0
        for inst in self.collectors:
            try:
                estimate += int(inst.plugin.disk_estimate())
            except Exception as exc:
                log.debug("%s: disk_estimate failed: %s", inst.name, exc)
        found += [("core", p) for p in check_output_dir(
            self.output_dir, estimate, self.settings.min_free_mb)]
        problem = archive.compression_problem(self.settings.compression)
        if problem:
            found.append(("core", Problem(problem)))
        # In profile order, one at a time: prepare everything, then check everything.
        for inst, outcome in self._run_phase(self.instances, Phase.PREPARE):
            if not outcome.ok:
                found.append((inst.name, Problem(f"prepare {outcome.error}")))
        for inst, outcome in self._run_phase(self.instances, Phase.PREFLIGHT):
            if not outcome.ok:
                found.append((inst.name, Problem(f"preflight {outcome.error}")))
                continue
            for p in outcome.value or []:
                found.append((inst.name, p))
                if not p.fatal:
                    self.notes.append(f"{inst.name}: {p.message}")
        return found

    # -- the one way a phase is called ---------------------------------------------------

    def _run_phase(
        self,
        insts: Sequence[PluginInstance],
        phase: Phase,
        at_once: bool = False,
        until: Optional[Callable[[], bool]] = None,
    ) -> List[Tuple[PluginInstance, phases.CallOutcome]]:
        """Call ``phase`` of each instance under its timeout and record the outcome.

        One after the other in the given order (stopping early once ``until()`` is
        true), or ``at_once``: all started together, then each collected. An instance
        never runs a phase twice: that would break the contract in plugin/api.py.
        """
        def call_of(inst: PluginInstance) -> Callable[[], Any]:
            if inst.ran(phase):
                raise RuntimeError(f"{inst.name}: {phase.value} would run twice")
            if phase is Phase.ARM:
                return lambda: inst.plugin.arm(self._fire_callback(inst))
            return getattr(inst.plugin, phase.value)

        done: List[Tuple[PluginInstance, phases.CallOutcome]] = []
        if at_once:
            calls = [phases.TimedCall(call_of(i), f"{phase.value}-{i.name}") for i in insts]
            for inst, running in zip(insts, calls):
                done.append((inst, running.result(inst.timeout)))
                inst.record_outcome(phase, done[-1][1])
            return done
        for inst in insts:
            outcome = phases.call_with_timeout(call_of(inst), inst.timeout, f"{phase.value}-{inst.name}")
            inst.record_outcome(phase, outcome)
            done.append((inst, outcome))
            if until is not None and until():
                break
        return done

    # -- the run ---------------------------------------------------------------------

    def fire(self, name: str, type_name: str, reason: str) -> None:
        """Record the first trigger and wake the main thread; later ones are logged only
        (but still wake it: a Ctrl-C during post_trigger_seconds stops at once)."""
        now = time.time()
        with self._trigger_lock:
            first = self.trigger is None
            if not first:
                log.info("also fired: %s (%s): %s", name, type_name, reason)
            else:
                self.trigger = TriggerRecord(name=name, type=type_name, reason=reason, time=now)
                self.times["clocks_at_trigger"] = manifest.clocks()
        self.triggered.set()
        if first:  # at once: a cluster coordinator stops the other nodes on this event
            self.events.emit("triggered", trigger=name, type=type_name, reason=reason, trigger_time=now)

    def _fire_callback(self, inst: PluginInstance):
        return lambda reason: self.fire(inst.name, inst.spec.type_name, str(reason))

    def handle_signal(self, signum: int) -> None:
        """SIGINT/SIGTERM: abort before the start, stop while running, abort packing.

        Runs in the main thread between two of its bytecodes, which may be inside
        ``self.triggered.wait()`` holding the Event's lock (or inside :meth:`fire`): a
        handler that took that lock would wait for itself forever (a run that ignored
        SIGTERM, seen under load). So it takes no lock: while running, it passes the
        signal through a pipe to the signal thread, which fires at once."""
        name = signal.Signals(signum).name
        if self.state is RunState.PREFLIGHT:
            raise KeyboardInterrupt(name)
        if self.state in (RunState.STARTING, RunState.RUNNING):  # past preflight: always an archive
            if self._signal_pipe is not None:
                os.write(self._signal_pipe[1], bytes([signum]))
        elif self.state is RunState.PACKING:
            raise KeyboardInterrupt(name)
        else:
            log.warning("%s received while %s: finishing that first", name, self.state.value)

    def request_stop(self, request: StopRequest) -> Dict[str, Any]:
        """A ``scoutfs-collect stop`` over the control socket (its thread): fire a trigger
        of the requested type; with ``durable`` the collectors persist in ``stop()``
        and no post_trigger_seconds are spent. What the client is told first."""
        if request.durable:
            self.durable_stop = True
        self.fire(request.type, request.type, request.reason)
        t = self.trigger
        assert t is not None
        return {"state": self.state.value, "trigger": {"type": t.type, "reason": t.reason},
                "pid": os.getpid(), "workdir": str(self.workdir)}

    def _on_plugin_failure(self, name: str, message: str) -> None:
        self.events.emit("error", plugin=name, message=message)

    def run(self) -> int:
        """The whole run after a clean preflight; returns the exit status."""
        self._start_signal_thread()
        self.state = RunState.STARTING
        try:
            self.stale = self.lock.acquire()
        except BaseException:
            self._end_signal_thread()
            self.cleanup()
            raise
        try:
            return self._run_locked()
        finally:
            self._end_signal_thread()
            if self.syncer is not None:
                self.syncer.join()
            self.cleanup()
            if self.control is not None:
                self.control.close()
            self.lock.release()
            self.events.close()

    def _start_signal_thread(self) -> None:
        """The thread that fires the operator trigger for each signal :meth:`handle_signal`
        writes into its pipe (a byte per signal), until the pipe is closed."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        self._signal_pipe = (read_fd, write_fd)

        def loop() -> None:
            while True:
                got = os.read(read_fd, 64)
                if not got:
                    return
                for signum in got:
                    name = signal.Signals(signum).name
                    self.fire("operator", "operator", f"{name} from the operator")

        self._signal_thread = threading.Thread(target=loop, name="signals", daemon=True)
        self._signal_thread.start()

    def _end_signal_thread(self) -> None:
        """Close the pipe's write end (no signal fires from here on) and let the thread end."""
        if self._signal_pipe is None:
            return
        read_fd, write_fd = self._signal_pipe
        self._signal_pipe = None
        os.close(write_fd)
        if self._signal_thread is not None:
            self._signal_thread.join(5.0)
        if self._signal_thread is None or not self._signal_thread.is_alive():
            os.close(read_fd)

    def cleanup(self) -> None:
        """Disarm what is still armed, then every instance's ``cleanup`` (each exactly
        once, whatever came before), then end any child left.

        Runs on every exit path after preflight began, a failed preflight included:
        ``prepare`` may have built something for a later plugin."""
        self._run_phase([i for i in self.triggers
                         if i.succeeded(Phase.ARM) and not i.ran(Phase.DISARM)], Phase.DISARM, at_once=True)
        self._run_phase([i for i in self.instances if not i.ran(Phase.CLEANUP)], Phase.CLEANUP)
        proc.kill_all()

    def _run_locked(self) -> int:
        started = time.time()
        self.times.update(started=started, clocks_at_start=manifest.clocks())
        if self.stale:
            self.notes.append(
                f"an earlier run (pid {self.stale.pid}) did not finish; its work dir "
                f"{self.stale.workdir} can be packed with: scoutfs-collect pack {self.stale.workdir}")
            log.warning(self.notes[-1])
        for note in remove_stale_partials(self.output_dir):
            self.notes.append(note)
            log.warning(note)
        self.workdir = make_workdir(self.output_dir, run_stem(started))
        self.lock.write(Holder(pid=os.getpid(), workdir=str(self.workdir), started=started))
        self.control = ControlServer(self.request_stop)
        self.events.listeners.append(self.control.publish)
        self.control.start()
        self._attach_run_log()
        log.info("work dir: %s", self.workdir)
        self.events.emit("started", workdir=str(self.workdir), pid=os.getpid())
        for inst in self.instances:
            inst.ctx.workdir = self.workdir / inst.name
            inst.ctx.dry_run = False
            inst.ctx._on_failure = self._on_plugin_failure
            if inst.spec.kind == "collector":
                inst.ctx.workdir.mkdir(mode=0o700)
        self._write_manifest()  # from here on, 'scoutfs-collect pack' can finish a killed run
        self.state = RunState.RUNNING
        self._start_collectors()
        self._arm_triggers()
        self.times["armed"] = time.time()
        self.syncer = StreamSyncer([(i.name, i.plugin.streams) for i in self.collectors
                                    if i.succeeded(Phase.START)], self.settings.sync_interval)
        self.syncer.start()
        self._write_manifest()
        self.events.emit("armed", triggers=[t.name for t in self.triggers])
        self._notify("scoutfs_collect_run_started", run=self._run_info())
        log.info("armed: %s; waiting (Ctrl-C to stop and pack)",
                 ", ".join(t.name for t in self.triggers) or "no triggers, Ctrl-C only")
        self._wait()
        return self._finish()

    def _attach_run_log(self) -> None:
        assert self.workdir is not None
        handler = logging.FileHandler(self.workdir / RUN_LOG, encoding="utf-8")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s.%(msecs)03d %(levelname)s %(name)s [%(threadName)s] %(message)s",
            "%Y-%m-%dT%H:%M:%S"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.DEBUG)
        self._log_handler = handler

    def _start_collectors(self) -> None:
        """In profile order; a trigger (Ctrl-C) during the start leaves the rest unstarted."""
        for inst, outcome in self._run_phase(self.collectors, Phase.START, until=self.triggered.is_set):
            if outcome.ok:
                inst.record.status = "ok"
            self._check_background_failures(inst)

    def _arm_triggers(self) -> None:
        for inst, outcome in self._run_phase(self.triggers, Phase.ARM):
            if outcome.ok:
                inst.record.status = "ok"

    def _wait(self) -> None:
        tick = 1.0
        last_status = time.monotonic()
        floor = self.settings.min_free_mb
        while not self.triggered.wait(tick):
            assert self.workdir is not None
            try:
                free = free_mb(self.workdir)
            except OSError:
                free = float("inf")
            if free < floor:
                self.fire("disk-space", "disk-space",
                          f"free space in {self.output_dir} fell to {free:.0f} MiB "
                          f"(settings.min_free_mb={floor})")
                break
            if self.console.tty:
                self.console.status(self._status_text(free))
            elif time.monotonic() - last_status >= self.settings.status_interval:
                last_status = time.monotonic()
                log.info(self._status_text(free))
        self.console.end_status()

    def _status_text(self, free: float) -> str:
        elapsed = time.time() - self.times["started"]
        parts = []
        for inst in self.collectors:
            try:
                parts.append(f"{inst.name} {human_bytes(inst.plugin.bytes_written())}")
            except Exception:
                parts.append(f"{inst.name} ?")
        armed = ", ".join(t.name for t in self.triggers) or "Ctrl-C"
        return (f"recording {human_seconds(elapsed)} | {' | '.join(parts)} | "
                f"free {human_bytes(free * 1024 * 1024)} | armed: {armed}")

    def _stop_collectors(self) -> None:
        """Stop every started collector at once, newest first, then disarm the triggers."""
        started = [i for i in reversed(self.collectors) if i.succeeded(Phase.START)]
        for inst, outcome in self._run_phase(started, Phase.STOP, at_once=True):
            inst.record.stopped_at = outcome.ended_at
        armed = [i for i in self.triggers if i.succeeded(Phase.ARM)]
        self._run_phase(armed, Phase.DISARM, at_once=True)

    def _finish(self) -> int:
        assert self.trigger is not None and self.workdir is not None
        self.state = RunState.STOPPING
        t = self.trigger
        log.info("triggered by %s (%s): %s", t.name, t.type, t.reason)
        self.times["triggered"] = t.time
        if self.settings.post_trigger_seconds > 0 and t.type != "disk-space" and not self.durable_stop:
            log.info("recording %.1f s more (settings.post_trigger_seconds; Ctrl-C stops now)",
                     self.settings.post_trigger_seconds)
            self.events.emit("post_trigger", seconds=self.settings.post_trigger_seconds,
                             trigger=t.name)
            self.state = RunState.RUNNING
            self.triggered.clear()
            self.triggered.wait(self.settings.post_trigger_seconds)
            self.state = RunState.STOPPING
        if self.syncer is not None:
            self.syncer.stop()  # never waits on the disk; the stop's own fsync covers the rest
        for inst in self.collectors:
            inst.ctx.durable_stop = self.durable_stop
        self._stop_collectors()
        self.times["stopped"] = time.time()
        self.events.emit("stopped")
        self._notify("scoutfs_collect_triggered", run=self._run_info(),
                     trigger=dataclasses.asdict(t))
        self._make_durable("durable")
        if self.syncer is not None:
            self.syncer.join()
            st = self.syncer.stats
            log.debug("stream syncer: %d rounds, %d files and %d dirs synced in %.3f s, %d errors",
                      st.rounds, st.files_synced, st.dirs_synced, st.seconds, st.errors)
        self.state = RunState.FINALIZING
        self._run_phase([i for i in self.collectors if i.returned(Phase.STOP)], Phase.FINALIZE,
                        at_once=True)
        for inst in self.instances:
            self._check_background_failures(inst)
        self.events.emit("finalized")
        self._make_durable(None)
        return self._pack()

    def _make_durable(self, event: Optional[str]) -> None:
        assert self.workdir is not None
        try:
            count = fsync_tree(self.workdir)
            log.debug("fsynced %d files", count)
            if event:
                self.times["durable"] = time.time()
                self.events.emit(event, files=count)
        except OSError as exc:
            log.error("fsync of %s failed: %s", self.workdir, exc)
            self.events.emit("error", plugin="core", message=f"fsync failed: {exc}")

    def _check_background_failures(self, inst: PluginInstance) -> None:
        for message in inst.ctx.failures:
            if message not in inst.record.errors:
                inst.record.record_error(message)

    def _pack(self) -> int:
        assert self.workdir is not None
        failed = any(i.record.status in ("failed", "timeout") for i in self.instances)
        exit_status = EXIT_PLUGIN_FAILED if failed else EXIT_OK
        self.times["finished"] = time.time()
        for inst in self.collectors:
            try:
                inst.record.files = archive.sha256_files(inst.ctx.workdir)
            except OSError as exc:
                inst.record.record_error(f"listing files: {exc}")
        self._write_manifest(exit_status)
        logging.getLogger().removeHandler(self._log_handler)
        self._log_handler.close()
        self.state = RunState.PACKING
        try:
            path = archive.pack(self.workdir, self.output_dir, self.settings.compression,
                                progress=lambda d, t: self.console.progress("packing", d, t),
                                min_free_bytes=packing_floor(self.settings.min_free_mb))
        except KeyboardInterrupt:
            self.console.end_status()
            log.error("packing interrupted; the work dir is kept: %s", self.workdir)
            log.error("finish it with: scoutfs-collect pack %s", self.workdir)
            self.events.emit("error", plugin="core", message="packing interrupted")
            return EXIT_NO_ARCHIVE
        except Exception as exc:
            self.console.end_status()
            log.error("cannot write the archive: %s; the work dir is kept: %s", exc, self.workdir)
            log.error("finish it later with: scoutfs-collect pack %s", self.workdir)
            self.events.emit("error", plugin="core", message=f"archive failed: {exc}")
            return EXIT_NO_ARCHIVE
        finally:
            self.state = RunState.DONE
        self.console.end_status()
        self.events.emit("archive", path=str(path))
        self._notify("scoutfs_collect_archive_written", run=self._run_info(), path=path)
        if not self.settings.keep_workdir:
            remove_tree(self.workdir)
        self.events.emit("finished", exit_status=exit_status)
        self.archive_path = path
        return exit_status

    def _run_info(self) -> Dict[str, Any]:
        return {"workdir": str(self.workdir), "target": dataclasses.asdict(self.req.target),
                "profile": self.req.profile.name}

    def _notify(self, hook: str, **kwargs: Any) -> None:
        """Call a notify-only hook; a failing hook is logged, never fatal."""
        try:
            getattr(self.req.registry.manager.hook, hook)(**kwargs)
        except Exception as exc:
            log.error("plugin hook %s failed: %s", hook, exc)

    def _write_manifest(self, exit_status: Optional[int] = None) -> None:
        assert self.workdir is not None
        for inst in self.instances:
            inst.record.details = dict(inst.ctx.details)
            inst.record.window = inst.ctx.window
        doc = manifest.assemble(
            argv=self.req.argv, profile=self.req.profile, target=self.req.target,
            times=self.times, trigger=self.trigger,
            plugins={inst.name: inst.record for inst in self.instances},
            exit_status=exit_status, notes=self.notes)
        manifest.write(self.workdir, doc)


def remove_tree(path: Path) -> None:
    """Remove a work dir we created (rmtree never follows symlinks out of it)."""
    shutil.rmtree(path, ignore_errors=True)

