"""What a plugin author writes against: collector and trigger base classes, their context,
and the lifecycle contract the core guarantees.

A *collector* records one kind of data, a *trigger* decides when the run ends. The
runner builds one object per profile entry and drives its phases; a plugin never calls
its own phases and never needs to guard against the runner.

Collector phases, in order::

    prepare -> preflight -> start -> stop -> finalize -> cleanup

Trigger phases, in order::

    prepare -> preflight -> arm -> disarm -> cleanup

``prepare()``
    Provide what other plugins' preflights look for (only the demo's simulated scoutfs
    tree does this). Runs for every instance, in profile order, before any preflight,
    also under ``scoutfs-collect check``. The only phase before ``start``/``arm`` that
    may change the system, and only in ways ``cleanup()`` undoes; say what in the class
    docstring.
``preflight()``
    Report problems as a list of :class:`Problem`; change nothing. ``ctx.dry_run`` is
    True under ``check``. In a real run a preflight may repair leftovers of a crashed
    run of its own (a stale tracefs instance) and must say so with a non-fatal Problem.
``start()`` / ``arm(fire)``
    Begin recording into ``ctx.workdir`` (it exists) / begin watching. ``fire(reason)``
    may be called once, from any thread, when the condition holds.
``stop()`` / ``disarm()``
    ``stop()`` is called the instant a trigger fires: freeze the data and return; do
    the slow work in ``finalize()``. ``disarm()`` stops watching.
``finalize()``
    Write the output files into ``ctx.workdir``.
``cleanup()``
    Give back whatever the instance still holds on the system (a child, a tracefs
    instance, a thread, a temporary tree).

What the runner guarantees (tested in ``tests/test_contract.py``):

* Each phase of an instance runs at most once, in the order above, each in a worker
  thread under the instance's timeout (``settings.phase_timeout`` or its ``timeout``).
* ``start``/``arm`` run only when no preflight found a fatal problem.
* ``stop`` runs only after a ``start`` that returned; ``disarm`` only after an ``arm``
  that returned. After a ``start``/``arm`` that raised or timed out, neither runs:
  ``cleanup`` must release what it took.
* ``finalize`` runs only after a ``stop`` that returned (it may have raised); not after
  a ``stop`` that timed out, which may still be running.
* ``cleanup`` runs exactly once for every instance, on every exit path (a fatal
  preflight, a signal, a failed phase), last. It may find a timed-out phase still
  running in its abandoned thread.
* An exception or a timeout in any phase is recorded in the manifest
  (``plugins.NAME.status`` ``failed``/``timeout`` with the error); the other plugins go on.
* Collectors start in profile order, stop all at once newest first, finalize in parallel.

The public API is what :mod:`scoutfs_collect` exports; everything else in the package is
internal and may change between releases.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Union

from scoutfs_collect.plugin.options import NoOptions
from scoutfs_collect.system.wakeup import Wakeup, WatcherThread

#: What ``Trigger.arm`` receives: call it once with the reason the trigger fired.
FireCallback = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something preflight found: what is wrong and the command or setting that fixes it.

    ``fatal=False`` marks a note or warning: shown to the user, recorded, but the run
    goes on (e.g. "removed stale tracefs instance left by pid 1234").
    """

    message: str
    fix: str = ""
    fatal: bool = True


@dataclasses.dataclass(frozen=True)
class Target:
    """The scoutfs server endpoint the user named on the command line."""

    ip: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.ip

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.is_ipv6 else f"{self.ip}:{self.port}"


@dataclasses.dataclass
class PluginContext:
    """Everything the runner hands one plugin instance.

    ``name`` is the instance name from the profile, ``type_name`` its plugin type.
    ``workdir`` is this instance's own output directory inside the run's work
    directory; it exists before ``start()``. ``details`` is free-form, JSON-able data
    that lands in the manifest under ``plugins.NAME.details``. Report the time span the
    data covers with :meth:`set_window` and failures noticed outside a phase with
    :meth:`fail`.
    """

    name: str
    type_name: str
    target: Target
    workdir: Path
    dry_run: bool = False
    log: logging.Logger = dataclasses.field(default_factory=lambda: logging.getLogger("plugin"))
    details: Dict[str, Any] = dataclasses.field(default_factory=dict)
    # The runner's bookkeeping, read through the properties below.
    _window: Optional[Dict[str, Optional[float]]] = dataclasses.field(default=None, repr=False)
    _failures: List[str] = dataclasses.field(default_factory=list, repr=False)
    _on_failure: Optional[Callable[[str, str], None]] = dataclasses.field(default=None, repr=False)

    def set_window(self, first: Optional[float], last: Optional[float]) -> None:
        """Record the epoch-seconds span the captured data covers (None when unknown)."""
        self._window = {"first": first, "last": last}

    @property
    def window(self) -> Optional[Dict[str, Optional[float]]]:
        """The span last given to :meth:`set_window` (a copy), or None."""
        return dict(self._window) if self._window is not None else None

    def fail(self, message: str) -> None:
        """Report a failure noticed outside a phase (a child process died, a reader broke).

        The manifest marks the plugin ``failed`` with this message; the run goes on.
        """
        self._failures.append(message)
        self.log.error("%s: %s", self.name, message)
        if self._on_failure is not None:
            self._on_failure(self.name, message)

    @property
    def failures(self) -> List[str]:
        """The messages given to :meth:`fail` so far (a copy)."""
        return list(self._failures)


class _PluginBase:
    #: The type name profiles use (``type: tcpdump``). Unique across all plugins.
    type_name: ClassVar[str] = ""
    #: Dataclass of declared options, built with :func:`scoutfs_collect.option`.
    Options: ClassVar[type] = NoOptions

    def __init__(self, ctx: PluginContext, options: Any) -> None:
        self.ctx = ctx
        self.options = options

    @property
    def log(self) -> logging.Logger:
        return self.ctx.log

    def prepare(self) -> None:
        """Provide what other plugins' preflights check (demo plugins only); see the module doc."""

    def preflight(self) -> List[Problem]:
        """Report everything that would stop this plugin from working; change nothing."""
        return []

    def cleanup(self) -> None:
        """Give back whatever this instance still holds on the system. Runs exactly once,
        last, on every exit path (see the module doc for what may still be running)."""


class Collector(_PluginBase):
    """Base class of collector types. The class docstring is its user documentation:
    say what it records, what it changes on the system, its overhead and requirements."""

    kind: ClassVar[str] = "collector"

    def disk_estimate(self) -> int:
        """Bytes this instance may write at most (checked against free space)."""
        return 0

    def start(self) -> None:
        """Begin recording."""

    def stop(self) -> None:
        """Freeze recording at once (the trigger fired). Must be fast."""

    def finalize(self) -> None:
        """Write the output files into ``self.ctx.workdir``."""

    def bytes_written(self) -> int:
        """Bytes recorded so far, for the live status line."""
        return directory_size(self.ctx.workdir)


class Trigger(_PluginBase):
    """Base class of trigger types. The class docstring is its user documentation."""

    kind: ClassVar[str] = "trigger"

    def arm(self, fire: FireCallback) -> None:
        """Start watching; call ``fire(reason)`` once the condition holds."""
        raise NotImplementedError

    def disarm(self) -> None:
        """Stop watching and release what ``arm`` took."""


class ThreadedTrigger(Trigger):
    """A trigger whose watching loop runs in its own thread.

    Subclasses implement :meth:`watch`; it should block on ``wakeup.wait_readable``
    or ``wakeup.wait`` rather than sleep, and return once ``wakeup.is_set()``.
    """

    def arm(self, fire: FireCallback) -> None:
        self._watcher = WatcherThread(
            lambda wakeup: self.watch(fire, wakeup),
            on_error=lambda message: self.ctx.fail(f"watcher stopped: {message}"),
            name=f"trigger-{self.ctx.name}",
        )
        self._thread = self._watcher.thread
        self._watcher.start()

    def watch(self, fire: FireCallback, wakeup: Wakeup) -> None:
        raise NotImplementedError

    def disarm(self) -> None:
        self._watcher.stop(timeout=None)


def directory_size(path: Union[str, Path]) -> int:
    """Total size in bytes of the regular files below ``path`` (0 if it is missing)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total
