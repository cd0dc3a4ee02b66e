"""scoutfs-collect: a flight recorder for the scoutfs clustered filesystem.

This module is the whole public API for plugin authors; anything else in the package is
internal and may change between releases (the built-in plugins ship with the core and
may use internal modules such as ``scoutfs_collect.system.tracefs``; site plugins must
not). The lifecycle and what the core guarantees are in :mod:`scoutfs_collect.plugin.api`,
the hooks in :mod:`scoutfs_collect.plugin.hookspecs`.

Plugin classes and their context:
    :class:`Collector`, :class:`Trigger`, :class:`ThreadedTrigger`, :class:`PluginContext`,
    :class:`Problem`, :class:`Target`, :class:`Wakeup`, ``FireCallback``, :func:`hookimpl`,
    :func:`option`.
A small toolkit, so that a site plugin does what the built-ins do:
    :func:`run_command` (a short command, argv only, output captured),
    :class:`ChildProcess` (a long-running program that dies with the runner),
    :func:`fsync_path` (make a file durable), :func:`directory_size`,
    :func:`human_bytes`, :func:`did_you_mean` (the suggestion in option errors),
    :func:`call_with_timeout` and :class:`TimedCall` (work that may hang, in a thread).
"""

from importlib.metadata import PackageNotFoundError, version

from scoutfs_collect.plugin.api import (
    Collector,
    FireCallback,
    PluginContext,
    Problem,
    Target,
    ThreadedTrigger,
    Trigger,
    Wakeup,
    directory_size,
)
from scoutfs_collect.plugin.hookspecs import hookimpl
from scoutfs_collect.plugin.options import did_you_mean, option
from scoutfs_collect.plugin.timed import CallOutcome, TimedCall, call_with_timeout
from scoutfs_collect.system.paths import fsync_path
from scoutfs_collect.system.proc import ChildProcess
from scoutfs_collect.system.proc import run as run_command
from scoutfs_collect.ui.console import human_bytes

try:
    __version__ = version("scoutfs-collect")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

__all__ = [
    "CallOutcome",
    "ChildProcess",
    "Collector",
    "FireCallback",
    "PluginContext",
    "Problem",
    "Target",
    "ThreadedTrigger",
    "Trigger",
    "Wakeup",
    "TimedCall",
    "__version__",
    "call_with_timeout",
    "did_you_mean",
    "directory_size",
    "fsync_path",
    "hookimpl",
    "human_bytes",
    "option",
    "run_command",
]
