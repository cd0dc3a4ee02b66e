"""Calling a function under a timeout in its own thread: the one copy, used by the runner
for every plugin phase and by plugins for work that can hang (statfs on a hung mount).

A call that outlives its timeout is abandoned (Python cannot kill a thread): it is
reported as timed out and its daemon thread dies with the process.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback
from typing import Any, Callable, Optional


@dataclasses.dataclass
class CallOutcome:
    """How one timed call ended."""

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


class TimedCall:
    """One call started in its own daemon thread at once; ``result(timeout)`` collects it,
    ``timeout`` seconds after the start at the latest. A call that outlives it is
    abandoned (Python cannot kill a thread) and reported as timed out."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self.outcome = CallOutcome()
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

    @property
    def done(self) -> bool:
        """The call has returned (or raised)."""
        return self._done.is_set()

    def result(self, timeout: float) -> CallOutcome:
        remaining = max(0.0, self._started + timeout - time.monotonic())
        if not self._done.wait(remaining):
            self.outcome.timed_out = True
            self.outcome.seconds = time.monotonic() - self._started
            self.outcome.error = f"did not finish within {timeout:g} s"
        return self.outcome


def call_with_timeout(fn: Callable[[], Any], timeout: float, name: str = "call") -> CallOutcome:
    """Run ``fn()`` in a thread, wait at most ``timeout`` s, return its outcome (never raises)."""
    return TimedCall(fn, name).result(timeout)
