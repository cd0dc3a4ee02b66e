"""Each plugin instance's lifecycle: one transition table, and the one timed invoker through
which the core calls plugin code.

The table (:data:`TRANSITIONS`) says, for each phase, which kind of plugin has it and what
must have happened before it may run; :meth:`PluginInstance.may_run` reads it, and the
runner asks it instead of keeping its own lists. :class:`Invoker` is the only way the core
calls into a plugin: phases, ``disk_estimate``, ``bytes_written``, ``streams`` and the notify
hooks all run in a worker thread under a timeout. A call that raises, times out or would
break the table is recorded (manifest and ``error`` event) and never ends the run.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from scoutfs_collect.plugin.timed import CallOutcome, TimedCall

if TYPE_CHECKING:
    from scoutfs_collect.core.instances import PluginInstance

log = logging.getLogger("scoutfs_collect")


class Phase(str, enum.Enum):
    """The plugin phases, in lifecycle order (see :mod:`scoutfs_collect.plugin.api`)."""

    PREPARE = "prepare"
    PREFLIGHT = "preflight"
    START = "start"
    ARM = "arm"
    STOP = "stop"
    PERSIST = "persist"
    DISARM = "disarm"
    FINALIZE = "finalize"
    CLEANUP = "cleanup"


class RunState(str, enum.Enum):
    """Where the whole run is; decides what a signal does (see core/stop.py)."""

    PREFLIGHT = "preflight"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FINALIZING = "finalizing"
    PACKING = "packing"
    DONE = "done"


class Needs(str, enum.Enum):
    """How the phase a transition depends on must have ended."""

    OK = "ok"              # returned without raising
    RETURNED = "returned"  # came back before its timeout (it may have raised)


@dataclasses.dataclass(frozen=True)
class Transition:
    """Which kinds have ``phase`` and what must have happened to the instance before it."""

    kinds: Tuple[str, ...]
    after: Optional[Phase] = None
    needs: Needs = Needs.OK


COLLECTOR, TRIGGER = "collector", "trigger"
BOTH = (COLLECTOR, TRIGGER)

#: The transition table: the runner calls a phase of an instance only where this allows it.
#: Every phase runs at most once; nothing runs after ``cleanup``, which runs exactly once.
TRANSITIONS: Dict[Phase, Transition] = {
    Phase.PREPARE: Transition(BOTH),
    Phase.PREFLIGHT: Transition(BOTH),
    Phase.START: Transition((COLLECTOR,), Phase.PREFLIGHT, Needs.OK),
    Phase.ARM: Transition((TRIGGER,), Phase.PREFLIGHT, Needs.OK),
    Phase.STOP: Transition((COLLECTOR,), Phase.START, Needs.OK),
    Phase.PERSIST: Transition((COLLECTOR,), Phase.STOP, Needs.RETURNED),
    Phase.DISARM: Transition((TRIGGER,), Phase.ARM, Needs.OK),
    Phase.FINALIZE: Transition((COLLECTOR,), Phase.PERSIST, Needs.RETURNED),
    Phase.CLEANUP: Transition(BOTH),
}


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a phase may not run now. ``illegal``: the caller broke the table (a phase
    twice, after cleanup, of the wrong kind), recorded as a plugin failure; otherwise the
    instance simply is not there yet (a collector that never started is not stopped)."""

    reason: str
    illegal: bool


def refusal(kind: str, outcomes: Dict[Phase, CallOutcome], phase: Phase) -> Optional[Refusal]:
    """Why ``phase`` may not run now for an instance of ``kind`` that went through
    ``outcomes``, or None when it may."""
    rule = TRANSITIONS[phase]
    if kind not in rule.kinds:
        return Refusal(f"a {kind} has no {phase.value} phase", True)
    if phase in outcomes:
        return Refusal(f"{phase.value} would run twice", True)
    if rule.after is not None:
        before = outcomes.get(rule.after)
        if before is None:
            return Refusal(f"{phase.value} before {rule.after.value}", False)
        if rule.needs is Needs.OK and not before.ok:
            return Refusal(f"{phase.value} after a {rule.after.value} that failed", False)
        if rule.needs is Needs.RETURNED and not before.returned:
            return Refusal(f"{phase.value} after a {rule.after.value} that is still running", False)
    if Phase.CLEANUP in outcomes:
        return Refusal(f"{phase.value} after cleanup", True)
    return None


#: Called with (instance name, message) for every failed call: the ``error`` event.
FailureSink = Callable[[str, str], None]


class Invoker:
    """The one way the core calls plugin code: in a worker thread, under a timeout.

    ``call`` never raises. A failure is logged and handed to ``on_failure`` (the runner
    emits an ``error`` event and the manifest records it). A call of the same kind to the
    same plugin that is still running from last time (a hung ``bytes_written``) is not
    started again: the caller gets a timed-out outcome at once, so hung plugin code never
    piles up threads.
    """

    def __init__(self, on_failure: FailureSink) -> None:
        self.on_failure = on_failure
        self._busy: Dict[Tuple[str, str], TimedCall] = {}
        self._reported: Set[Tuple[str, str]] = set()
        self._lock = threading.Lock()

    def call(self, owner: str, what: str, fn: Callable[[], Any], timeout: float,
             once: bool = False) -> CallOutcome:
        """Run ``fn()`` for plugin ``owner`` (``what``: the phase or method name). With
        ``once`` (calls repeated every second) only the first failure is reported."""
        key = (owner, what)
        with self._lock:
            running = self._busy.get(key)
            if running is not None and not running.done:
                return CallOutcome(error=f"{what} is still running from an earlier call",
                                   timed_out=True)
            call = self._busy[key] = TimedCall(fn, f"{what}-{owner}")
        outcome = call.result(timeout)
        if not outcome.ok and not (once and key in self._reported):
            self._reported.add(key)
            self.fail(owner, f"{what}: {outcome.error}", outcome.detail)
        return outcome

    def start(self, owner: str, what: str, fn: Callable[[], Any]) -> TimedCall:
        """Start ``fn()`` now and collect it later with :meth:`collect` (calls at once)."""
        call = TimedCall(fn, f"{what}-{owner}")
        with self._lock:
            self._busy[(owner, what)] = call
        return call

    def collect(self, owner: str, what: str, call: TimedCall, timeout: float) -> CallOutcome:
        outcome = call.result(timeout)
        if not outcome.ok:
            self.fail(owner, f"{what}: {outcome.error}", outcome.detail)
        return outcome

    def fail(self, owner: str, message: str, detail: str = "") -> None:
        """Record a failure of plugin ``owner`` that was not a call (a refused transition)."""
        log.error("%s: %s", owner, message)
        if detail:
            log.debug("%s: traceback:\n%s", owner, detail)
        self.on_failure(owner, message)


def advance(invoker: Invoker, insts: Sequence[PluginInstance], phase: Phase,
            call_of: Callable[[PluginInstance, Phase], Callable[[], Any]], at_once: bool = False,
            until: Optional[Callable[[], bool]] = None) -> List[Tuple[PluginInstance, CallOutcome]]:
    """Call ``phase`` of each instance the transition table lets through, under its
    timeout, and record the outcome. One after the other in the given order (stopping
    early once ``until()`` is true), or ``at_once``: all started together, then each
    collected. An illegal transition is recorded as that plugin's failure; an instance
    the table is not ready for (a collector that never started) is passed over."""
    ready = []
    for inst in insts:
        refused = inst.refusal(phase)
        if refused is None:
            ready.append(inst)
        elif refused.illegal:
            inst.record.record_error(f"{phase.value}: refused: {refused.reason}")
            invoker.fail(inst.name, f"{phase.value}: refused: {refused.reason}")
    done: List[Tuple[PluginInstance, CallOutcome]] = []
    if at_once:
        calls = [invoker.start(i.name, phase.value, call_of(i, phase)) for i in ready]
        for inst, running in zip(ready, calls):
            outcome = invoker.collect(inst.name, phase.value, running, inst.timeout)
            inst.record_outcome(phase, outcome)
            done.append((inst, outcome))
        return done
    for inst in ready:
        outcome = invoker.call(inst.name, phase.value, call_of(inst, phase), inst.timeout)
        inst.record_outcome(phase, outcome)
        done.append((inst, outcome))
        if until is not None and until():
            break
    return done
