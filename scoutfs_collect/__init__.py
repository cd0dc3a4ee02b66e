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
Analyzers (``inspect --findings``): :class:`Analyzer`, the records it is handed
    (:class:`Record`), what it knows of the input (:class:`AnalysisContext`,
    :class:`NodeInfo`) and what it yields (:class:`Finding`, :class:`Evidence`).
A small toolkit, so that a site plugin does what the built-ins do:
    :func:`run_command` (a short command, argv only, output captured; like ChildProcess it
    dies with the runner and is out of the terminal's reach, and its timeout ends all it started),
    :class:`ChildProcess` (a long-running program that dies with the runner),
    :func:`fsync_path` (make a file durable), :func:`directory_size`,
    :func:`human_bytes`, :func:`did_you_mean` (the suggestion in option errors),
    :func:`call_with_timeout` and :class:`TimedCall` (work that may hang, in a thread).
"""

import importlib
from typing import Any, Dict, Tuple

from scoutfs_collect import source_tree

# In a checkout that is not installed, builtin_plugins and profiles are the top-level
# plugins/ and profiles/ (as pyproject maps them); an install never needs this.
source_tree.install(__path__[0])

# Each public name -> (module, name there). Resolved on first use (PEP 562): the short
# commands (stop, fence-hook, --help) then never pay for pluggy, psutil or the package
# metadata scan, and ``from scoutfs_collect import Collector`` works as before.
_EXPORTS: Dict[str, Tuple[str, str]] = {
    **{name: ("scoutfs_collect.plugin.api", name) for name in (
        "Collector", "FireCallback", "PluginContext", "Problem", "Target", "ThreadedTrigger",
        "Trigger", "Wakeup", "directory_size", "Analyzer")},
    **{name: ("scoutfs_collect.plugin.finding", name) for name in (
        "AnalysisContext", "Evidence", "Finding", "NodeInfo", "Record")},
    "hookimpl": ("scoutfs_collect.plugin.hookspecs", "hookimpl"),
    "did_you_mean": ("scoutfs_collect.plugin.options", "did_you_mean"),
    "option": ("scoutfs_collect.plugin.options", "option"),
    "fsync_path": ("scoutfs_collect.system.paths", "fsync_path"),
    "ChildProcess": ("scoutfs_collect.system.proc", "ChildProcess"),
    "run_command": ("scoutfs_collect.system.proc", "run"),
    "human_bytes": ("scoutfs_collect.ui.console", "human_bytes"),
    **{name: ("scoutfs_collect.plugin.timed", name) for name in (
        "CallOutcome", "TimedCall", "call_with_timeout")},
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scoutfs-collect")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+source"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
    else:
        raise AttributeError(f"module 'scoutfs_collect' has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list:
    return sorted(__all__)


__all__ = [
    "AnalysisContext",
    "Analyzer",
    "CallOutcome",
    "Evidence",
    "Finding",
    "NodeInfo",
    "Record",
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
