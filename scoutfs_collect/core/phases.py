"""The names of the plugin phases and of the run's states; each phase is called with
:mod:`scoutfs_collect.plugin.timed` (in its own thread, under its timeout), so that no
plugin can stop the others."""

from __future__ import annotations

import enum

from scoutfs_collect.plugin.timed import CallOutcome, TimedCall, call_with_timeout

__all__ = ["CallOutcome", "Phase", "RunState", "TimedCall", "call_with_timeout"]


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
