"""The run: lock, prepare and preflight everything, start collectors, arm triggers, wait,
stop, persist, finalize, clean up, pack.

The runner only sequences the lifecycle. Each concern has its own module: the transition
table and the timed invoker (:mod:`.lifecycle`), stop requests and signals (:mod:`.stop`),
the armed wait with its watchdog and status line (:mod:`.waiting`), the control socket
(:mod:`.control`), the events (:mod:`.events`), the manifest (:mod:`..archive.manifest`).

One lifecycle, lock first: ``run`` (the service and a cluster node included) takes the host
lock before any plugin's ``prepare``, so a second ``run`` beside a live one is refused
before it touches anything; ``check`` only probes the lock and repairs nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from scoutfs_collect.archive import manifest
from scoutfs_collect.archive import write as archive
from scoutfs_collect.archive.manifest import TriggerRecord
from scoutfs_collect.archive.recover import remove_stale_partials
from scoutfs_collect.core import record
from scoutfs_collect.core.checks import check_lock, check_output_dir, check_root
from scoutfs_collect.core.control import ControlServer
from scoutfs_collect.core.errors import EXIT_NO_ARCHIVE, EXIT_OK, EXIT_PLUGIN_FAILED
from scoutfs_collect.core.events import EventLog
from scoutfs_collect.core.instances import PluginInstance, build_instances
from scoutfs_collect.core.lifecycle import Invoker, Phase, RunState, advance
from scoutfs_collect.core.profile import Profile
from scoutfs_collect.core.registry import Registry
from scoutfs_collect.core.stop import StopInbox, StopRequest
from scoutfs_collect.core.syncer import StreamSyncer
from scoutfs_collect.core.waiting import wait_armed
from scoutfs_collect.plugin.api import Problem, Target
from scoutfs_collect.plugin.timed import CallOutcome
from scoutfs_collect.system import proc
from scoutfs_collect.system.lock import Holder, HostLock
from scoutfs_collect.system.paths import fsync_tree, make_workdir, run_stem
from scoutfs_collect.ui.console import Console

log = logging.getLogger("scoutfs_collect")
PHASE_VALUES = {p.value for p in Phase}


@dataclasses.dataclass
class RunRequest:
    """Everything the CLI resolved for one run."""

    profile: Profile
    registry: Registry
    target: Target
    argv: List[str]
    events_file: Optional[Path] = None


class Runner:
    """Drives one run: ``lock()``, ``preflight()``, then ``record()`` only if preflight found
    nothing fatal; ``close()`` on every path. ``check()`` is the dry run."""

    def __init__(self, request: RunRequest, console: Console, dry_run: bool = False) -> None:
        self.req = request
        self.settings = request.profile.settings
        self.output_dir = Path(self.settings.output_dir)
        self.console = console
        self.instances = build_instances(request.profile, request.registry, request.target, dry_run)
        self.collectors = [i for i in self.instances if i.spec.kind == "collector"]
        self.triggers = [i for i in self.instances if i.spec.kind == "trigger"]
        self.lock = HostLock()
        self.events = EventLog(request.events_file, console=True)
        self.invoker = Invoker(self._on_plugin_failure)
        self.inbox = StopInbox(self._on_first_stop, self._on_later_stop)
        self.state = RunState.PREFLIGHT
        self.workdir: Optional[Path] = None
        self.times: Dict[str, Any] = {}
        self.notes: List[str] = []
        self.stale: Optional[Holder] = None
        self.archive_path: Optional[Path] = None  # set once the archive is complete
        self.control: Optional[ControlServer] = None
        self.syncer: Optional[StreamSyncer] = None
        self._log_handler: Optional[logging.Handler] = None
        self._closed = False
        self._locked = False  # nothing of a run that never got the lock may run

    # -- lock and preflight ------------------------------------------------------------

    def lock_host(self) -> None:
        """Take the host lock before anything else (LockBusy names the live holder)."""
        self.stale = self.lock.acquire()
        self._locked = True

    def check(self) -> List[Tuple[str, Problem]]:
        """``scoutfs-collect check``: probe the lock (never take it), prepare, preflight."""
        found = [("core", p) for p in check_lock(self.lock)]
        holder = self.lock.probe() if found else None
        for inst in self.instances:
            inst.ctx.live_run_pid = holder.pid if holder and holder.pid > 0 else None
        return found + self.preflight()

    def preflight(self) -> List[Tuple[str, Problem]]:
        """Every problem found, fatal or not, each tagged with who found it. In a real run
        the host lock is held (``lock_host``), so a plugin may repair a leftover whose owner
        is provably dead."""
        found: List[Tuple[str, Problem]] = [("core", p) for p in check_root()]
        estimate = 0
        for inst in self.collectors:
            outcome = self.invoker.call(inst.name, "disk_estimate", inst.plugin.disk_estimate,
                                        inst.timeout)
            if outcome.ok:
                estimate += int(outcome.value or 0)
        found += [("core", p) for p in check_output_dir(
            self.output_dir, estimate, self.settings.min_free_mb)]
        problem = archive.compression_problem(self.settings.compression)
        if problem:
            found.append(("core", Problem(problem)))
        # In profile order, one at a time: prepare everything, then check everything.
        for inst, outcome in self._advance(self.instances, Phase.PREPARE):
            if not outcome.ok:
                found.append((inst.name, Problem(f"prepare {outcome.error}")))
        for inst, outcome in self._advance(self.instances, Phase.PREFLIGHT):
            if not outcome.ok:
                found.append((inst.name, Problem(f"preflight {outcome.error}")))
                continue
            for p in outcome.value or []:
                found.append((inst.name, p))
                if not p.fatal:
                    self.notes.append(f"{inst.name}: {p.message}")
        return found

    # -- the one way a phase is called ---------------------------------------------------

    def _advance(self, insts: Sequence[PluginInstance], phase: Phase, at_once: bool = False,
                 until: Optional[Callable[[], bool]] = None
                 ) -> List[Tuple[PluginInstance, CallOutcome]]:
        """Call ``phase`` of each instance the transition table lets through (see
        :func:`lifecycle.advance`)."""
        return advance(self.invoker, insts, phase, self._phase_call, at_once, until)

    def _phase_call(self, inst: PluginInstance, phase: Phase) -> Callable[[], Any]:
        if phase is Phase.ARM:
            return lambda: inst.plugin.arm(self._fire_callback(inst))
        return getattr(inst.plugin, phase.value)

    def _on_plugin_failure(self, name: str, message: str) -> None:
        """Every plugin failure: an ``error`` event; a failure outside a phase (an estimate,
        ``bytes_written``, a hook, ``ctx.fail``) also marks the plugin failed."""
        what = message.split(":", 1)[0]
        inst = next((i for i in self.instances if i.name == name), None)
        if inst is not None and what not in PHASE_VALUES and message not in inst.record.errors:
            inst.record.record_error(message)
        self.events.emit("error", plugin=name, message=message)

    # -- stop requests -------------------------------------------------------------------

    def _fire_callback(self, inst: PluginInstance) -> Callable[[str], None]:
        return lambda reason: self.fire(inst.name, inst.spec.type_name, str(reason))

    def fire(self, name: str, type_name: str, reason: str) -> None:
        """A trigger plugin fired (from its own thread)."""
        self.inbox.post(StopRequest(type=type_name, reason=reason, name=name))

    def request_stop(self, request: StopRequest) -> Dict[str, Any]:
        """A stop from the control socket or the cluster session (their threads); what the
        client is told first."""
        first = self.inbox.post(request)
        return {"state": self.state.value, "trigger": {"type": first.type, "reason": first.reason},
                "pid": os.getpid(), "workdir": str(self.workdir)}

    def handle_signal(self, signum: int) -> None:
        """SIGINT/SIGTERM: abort before the start and while packing; otherwise a stop
        request (only a flag and a byte in a pipe: a handler takes no lock)."""
        if self.state in (RunState.PREFLIGHT, RunState.PACKING):
            raise KeyboardInterrupt(signal.Signals(signum).name)
        self.inbox.post_signal(signum)

    @property
    def trigger(self) -> Optional[TriggerRecord]:
        """What ended the run: the inbox's first request (None before any)."""
        first = self.inbox.first
        if first is None:
            return None
        return TriggerRecord(name=first.trigger_name, type=first.type, reason=first.reason,
                             time=first.time)

    def _on_first_stop(self, request: StopRequest) -> None:
        """In the posting thread, after the main thread was woken to stop the rings: a
        cluster coordinator stops the other nodes on this event."""
        self.events.emit("triggered", trigger=request.trigger_name, type=request.type,
                         reason=request.reason, trigger_time=request.time)

    def _on_later_stop(self, request: StopRequest) -> None:
        if self.state in (RunState.STOPPING, RunState.FINALIZING):
            log.warning("%s received while %s: finishing that first", request.reason, self.state.value)
        else:
            log.info("also fired: %s (%s): %s", request.trigger_name, request.type, request.reason)

    # -- the run ---------------------------------------------------------------------

    def record(self) -> int:
        """Everything after a clean preflight; returns the exit status. An unexpected
        exception is exit 3 with the work dir kept and named, and no child left."""
        self.state = RunState.STARTING
        try:
            return self._record()
        except Exception as exc:  # a bug of ours: never a traceback, never data lost
            log.debug("unexpected error", exc_info=True)
            log.error("unexpected error: %s: %s", type(exc).__name__, exc)
            self.events.emit("error", plugin="core", message=f"unexpected error: {type(exc).__name__}: {exc}")
            self.cleanup()
            if self.workdir is not None:
                log.error("the work dir is kept: %s; finish it with: scoutfs-collect pack %s",
                          self.workdir, self.workdir)
            return EXIT_NO_ARCHIVE

    def _record(self) -> int:
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
        self._log_handler = record.attach_run_log(self.workdir)
        self.events.emit("started", workdir=str(self.workdir), pid=os.getpid())
        for inst in self.instances:
            inst.ctx.workdir = self.workdir / inst.name
            inst.ctx.dry_run = False
            inst.ctx._on_failure = lambda name, message: self._on_plugin_failure(name, message)
            if inst.spec.kind == "collector":
                inst.ctx.workdir.mkdir(mode=0o700)
        self._write_manifest()  # from here on, 'scoutfs-collect pack' can finish a killed run
        self.state = RunState.RUNNING
        for inst, outcome in self._advance(self.collectors, Phase.START, until=self.inbox.pending):
            if outcome.ok and not inst.record.errors:
                inst.record.status = "ok"
        for inst, outcome in self._advance(self.triggers, Phase.ARM):
            if outcome.ok and not inst.record.errors:
                inst.record.status = "ok"
        self.times["armed"] = time.time()
        self.syncer = StreamSyncer([(i.name, self._streams_of(i)) for i in self.collectors
                                    if i.succeeded(Phase.START)], self.settings.sync_interval)
        self.syncer.start()
        self._write_manifest()
        self.events.emit("armed", triggers=[t.name for t in self.triggers])
        self._notify("scoutfs_collect_run_started", run=self._run_info())
        wait_armed(self.inbox, self.invoker, self.collectors, self.triggers, self.settings,
                   self.workdir, self.console, started)
        self._post_trigger()
        self._stop_and_persist()
        self._finalize()
        return self._pack()

    def _streams_of(self, inst: PluginInstance) -> Callable[[], Sequence[Path]]:
        """The syncer asks for a collector's streams through the invoker too."""
        def streams() -> Sequence[Path]:
            outcome = self.invoker.call(inst.name, "streams", inst.plugin.streams, inst.timeout, once=True)
            return list(outcome.value or []) if outcome.ok else []
        return streams

    def _post_trigger(self) -> None:
        """``settings.post_trigger_seconds`` more recording, cut short by any later request
        (Ctrl-C) and skipped for disk-space and for a client waiting for durable data."""
        assert self.trigger is not None
        t, extra = self.trigger, self.settings.post_trigger_seconds
        self.state = RunState.STOPPING
        self.times["triggered"] = t.time
        self.times["clocks_at_trigger"] = manifest.clocks()
        if extra <= 0 or t.type == "disk-space" or self.inbox.urgent:
            return
        self._await_announcement()
        self.events.emit("post_trigger", seconds=extra, trigger=t.name)
        self.state = RunState.RUNNING
        deadline, seen = time.monotonic() + extra, self.inbox.later
        while time.monotonic() < deadline and self.inbox.later == seen and not self.inbox.urgent:
            self.inbox.wait(deadline - time.monotonic())
        self.state = RunState.STOPPING

    def _await_announcement(self) -> None:
        """The ``triggered`` event goes out in the posting thread while this one stops the
        rings; wait for it (5 s at most) before the next event, so events stay in order."""
        if not self.inbox.announced.wait(5.0):
            log.warning("the triggered event is still being sent after 5 s; going on")

    def _stop_and_persist(self) -> None:
        """Stop every started collector at once (newest first) and disarm the triggers; then
        every collector persists what exists only in memory, the work dir is fsync'ed and
        ``durable`` goes out, whoever asked for the stop. Only then the notify hook."""
        assert self.trigger is not None
        if self.syncer is not None:
            self.syncer.stop()  # never waits on the disk; the fsync below covers the rest
        for inst, outcome in self._advance(list(reversed(self.collectors)), Phase.STOP, at_once=True):
            inst.record.stopped_at = outcome.ended_at
        self._advance(self.triggers, Phase.DISARM, at_once=True)
        self.times["stopped"] = time.time()
        self._await_announcement()
        self.events.emit("stopped")
        self.inbox.pending()  # signals received meanwhile are noted
        self._advance(self.collectors, Phase.PERSIST, at_once=True)
        self._make_durable("durable")
        self._notify("scoutfs_collect_triggered", run=self._run_info(),
                     trigger=dataclasses.asdict(self.trigger))
        if self.syncer is not None:
            self.syncer.join()
            st = self.syncer.stats
            log.debug("stream syncer: %d rounds, %d files and %d dirs synced in %.3f s, %d errors",
                      st.rounds, st.files_synced, st.dirs_synced, st.seconds, st.errors)

    def _finalize(self) -> None:
        """Finalize in parallel, then clean up (before the manifest, so what cleanup
        reports reaches it and the exit status), then fsync again."""
        self.state = RunState.FINALIZING
        self._advance(self.collectors, Phase.FINALIZE, at_once=True)
        self.inbox.pending()  # signals received meanwhile are noted
        self.events.emit("finalized")
        self.cleanup()
        for inst in self.instances:
            for message in inst.ctx.failures:
                if message not in inst.record.errors:
                    inst.record.record_error(message)
        self._make_durable(None)

    def cleanup(self) -> None:
        """Disarm what is still armed, then every instance's ``cleanup`` (each exactly
        once, whatever came before), then end any child left. Runs on every exit path
        after the lock was taken, a failed preflight included: ``prepare`` may have built
        something for a later plugin."""
        self._advance([i for i in self.triggers if not i.ran(Phase.DISARM)], Phase.DISARM, at_once=True)
        self._advance([i for i in self.instances if not i.ran(Phase.CLEANUP)], Phase.CLEANUP)
        proc.kill_all()

    def close(self) -> None:
        """The last act on every path: cleanup if not done, stop listening, let go of the
        lock, close the events file."""
        if self._closed:
            return
        self._closed = True
        if not self._locked:  # refused at the lock: not one plugin method ran
            self.events.close()
            self.inbox.close()
            return
        if self.syncer is not None:
            self.syncer.join()
        self.cleanup()
        if self.control is not None:
            self.control.close()
        self.lock.release()
        self.events.close()
        self.inbox.close()
        record.detach_run_log(self._log_handler)
        self._log_handler = None

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

    def _pack(self) -> int:
        assert self.workdir is not None
        failed = any(i.record.status in ("failed", "timeout") for i in self.instances)
        exit_status = EXIT_PLUGIN_FAILED if failed else EXIT_OK
        self.times["finished"] = time.time()
        record.file_lists(self.collectors)
        self._write_manifest(exit_status)
        record.detach_run_log(self._log_handler)
        self._log_handler = None
        self.state = RunState.PACKING
        try:
            path = record.pack(self.workdir, self.output_dir, self.settings, self.console, self.events)
        finally:
            self.state = RunState.DONE
        if path is None:
            return EXIT_NO_ARCHIVE
        self._notify("scoutfs_collect_archive_written", run=self._run_info(), path=path)
        if not self.settings.keep_workdir:
            record.remove_workdir(self.workdir)
        self.events.emit("finished", exit_status=exit_status)
        self.archive_path = path
        return exit_status

    def _run_info(self) -> Dict[str, Any]:
        return {"workdir": str(self.workdir), "target": dataclasses.asdict(self.req.target),
                "profile": self.req.profile.name}

    def _notify(self, hook: str, **kwargs: Any) -> None:
        """Call a notify-only hook through the invoker: a failing or hanging hook is an
        ``error`` event and a manifest note, never fatal, never longer than
        ``settings.phase_timeout``."""
        outcome = self.invoker.call("hooks", hook,
                                    lambda: getattr(self.req.registry.manager.hook, hook)(**kwargs),
                                    self.settings.phase_timeout)
        if not outcome.ok:
            self.notes.append(f"plugin hook {hook} failed: {outcome.error}")

    def _write_manifest(self, exit_status: Optional[int] = None) -> None:
        assert self.workdir is not None
        record.write_manifest(self.workdir, self.instances, exit_status, argv=self.req.argv,
                              profile=self.req.profile, target=self.req.target, times=self.times,
                              trigger=self.trigger, notes=self.notes)
