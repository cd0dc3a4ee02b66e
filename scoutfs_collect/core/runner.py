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
from scoutfs_collect.core.errors import EXIT_NO_ARCHIVE, EXIT_OK, EXIT_PLUGIN_FAILED
from scoutfs_collect.core.events import EventLog
from scoutfs_collect.core.instances import PluginInstance, build_instances
from scoutfs_collect.core.phases import Phase, RunState
from scoutfs_collect.core.profile import Profile
from scoutfs_collect.core.registry import Registry
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
            if self.trigger is not None:
                log.info("also fired: %s (%s): %s", name, type_name, reason)
            else:
                self.trigger = TriggerRecord(name=name, type=type_name, reason=reason, time=now)
                self.times["clocks_at_trigger"] = manifest.clocks()
        self.triggered.set()

    def _fire_callback(self, inst: PluginInstance):
        return lambda reason: self.fire(inst.name, inst.spec.type_name, str(reason))

    def handle_signal(self, signum: int) -> None:
        """SIGINT/SIGTERM: abort before the start, stop while running, abort packing."""
        name = signal.Signals(signum).name
        if self.state is RunState.PREFLIGHT:
            raise KeyboardInterrupt(name)
        if self.state in (RunState.STARTING, RunState.RUNNING):  # past preflight: always an archive
            self.fire("operator", "operator", f"{name} from the operator")
        elif self.state is RunState.PACKING:
            raise KeyboardInterrupt(name)
        else:
            log.warning("%s received while %s: finishing that first", name, self.state.value)

    def _on_plugin_failure(self, name: str, message: str) -> None:
        self.events.emit("error", plugin=name, message=message)

    def run(self) -> int:
        """The whole run after a clean preflight; returns the exit status."""
        self.state = RunState.STARTING
        try:
            self.stale = self.lock.acquire()
        except BaseException:
            self.cleanup()
            raise
        try:
            return self._run_locked()
        finally:
            self.cleanup()
            self.lock.release()
            self.events.close()

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
        if self.settings.post_trigger_seconds > 0 and t.type != "disk-space":
            log.info("recording %.1f s more (settings.post_trigger_seconds; Ctrl-C stops now)",
                     self.settings.post_trigger_seconds)
            self.events.emit("post_trigger", seconds=self.settings.post_trigger_seconds,
                             trigger=t.name)
            self.state = RunState.RUNNING
            self.triggered.clear()
            self.triggered.wait(self.settings.post_trigger_seconds)
            self.state = RunState.STOPPING
        self._stop_collectors()
        self.times["stopped"] = time.time()
        self.events.emit("triggered", trigger=t.name, type=t.type, reason=t.reason,
                         trigger_time=t.time)
        self.events.emit("stopped")
        self._notify("scoutfs_collect_triggered", run=self._run_info(),
                     trigger=dataclasses.asdict(t))
        self._make_durable("durable")
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

