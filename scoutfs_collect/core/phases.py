"""Running one plugin phase under a timeout, so that no plugin can stop the others.

Each call runs in its own daemon thread. A phase that outlives its timeout is
abandoned (Python cannot kill a thread): it is recorded as ``timeout`` and the run
moves on; the thread dies with the process.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import time
import traceback
from typing import Any, Callable, Optional


class Phase(str, enum.Enum):
    """The plugin phases, in lifecycle order (see :mod:`scoutfs_collect.plugin.api`)."""

    PREPARE = "prepare"
    PREFLIGHT = "preflight"
    START = "start"
    ARM = "arm"
    STOP = "stop"
    DISARM = "disarm"
    FINALIZE = "finalize"
    CLEANUP = "cleanup"


class RunState(str, enum.Enum):
    """Where the whole run is; decides what a signal does (see Runner.handle_signal)."""

    PREFLIGHT = "preflight"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FINALIZING = "finalizing"
    PACKING = "packing"
    DONE = "done"


@dataclasses.dataclass
class PhaseOutcome:
    """How one phase call ended."""

    seconds: float = 0.0
    value: Any = None
    error: Optional[str] = None
    timed_out: bool = False
    detail: str = ""  # traceback, for the run log only
    ended_at: Optional[float] = None  # epoch seconds when the call returned

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out

    @property
    def returned(self) -> bool:
        """The call came back (normally or by raising) before its timeout."""
        return not self.timed_out


class PhaseCall:
    """One phase started in its own thread; ``result(deadline)`` collects it."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self.outcome = PhaseOutcome()
        self._done = threading.Event()
        self._fn = fn
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.outcome.value = self._fn()
        except BaseException as exc:  # noqa: B036 - a plugin's SystemExit must not end the run
            self.outcome.error = f"{type(exc).__name__}: {exc}"
            self.outcome.detail = traceback.format_exc()
        finally:
            self.outcome.seconds = time.monotonic() - self._started
            self.outcome.ended_at = time.time()
            self._done.set()

    def result(self, timeout: float) -> PhaseOutcome:
        remaining = max(0.0, self._started + timeout - time.monotonic())
        if not self._done.wait(remaining):
            self.outcome.timed_out = True
            self.outcome.seconds = time.monotonic() - self._started
            self.outcome.error = f"did not finish within {timeout:g} s"
        return self.outcome


def call(fn: Callable[[], Any], timeout: float, name: str = "phase") -> PhaseOutcome:
    """Run ``fn()`` with a timeout and return its outcome (never raises)."""
    return PhaseCall(fn, name).result(timeout)
