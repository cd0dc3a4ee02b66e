"""What a plugin author writes against: collector and trigger base classes, their context,
and the lifecycle contract the core guarantees.

A *collector* records one kind of data, a *trigger* decides when the run ends. The
runner builds one object per profile entry and drives its phases; a plugin never calls
its own phases and never needs to guard against the runner.

Collector phases, in order::

    prepare -> preflight -> start -> stop -> persist -> finalize -> cleanup

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
    True under ``check``, which never takes the host lock and repairs nothing
    (``ctx.live_run_pid`` names a live run holding it, whose files are not leftovers). In a
    real run the host lock is already held when ``prepare`` runs, so no other
    scoutfs-collect is alive: a preflight may repair a leftover of a killed run of its own
    (a tracefs instance) when its owner is provably dead (no process holds it open), never
    because a name exists, and must say so with a non-fatal Problem.
``start()`` / ``arm(fire)``
    Begin recording into ``ctx.workdir`` (it exists) / begin watching. ``fire(reason)``
    may be called once, from any thread, when the condition holds.
``stop()`` / ``disarm()``
    ``stop()`` is called the instant a trigger fires: freeze the data and return; do
    the slow work later. ``disarm()`` stops watching.
``persist()``
    Write and fsync what exists only in memory (the ftrace ring's raw pages), after every
    stop, whoever asked for it: the core then fsyncs the work dir and emits ``durable``,
    which a fence hook waits for before the node is powered off. Be quick: seconds count.
``finalize()``
    Write the output files into ``ctx.workdir``.
``cleanup()``
    Give back whatever the instance still holds on the system (a child, a tracefs
    instance, a thread, a temporary tree).

The transition table (``scoutfs_collect/core/lifecycle.py``, ``TRANSITIONS``), which the
runner enforces and ``tests/test_contract.py`` checks:

=========  ==========  ============================================
phase      kinds       runs only after
=========  ==========  ============================================
prepare    both        (first)
preflight  both        every instance's prepare
start      collector   a preflight that returned without raising
arm        trigger     a preflight that returned without raising
stop       collector   a start that returned without raising
persist    collector   a stop that returned (it may have raised)
disarm     trigger     an arm that returned without raising
finalize   collector   a persist that returned (it may have raised)
cleanup    both        anything; exactly once, last, on every path
=========  ==========  ============================================

What else the runner guarantees:

* Each phase of an instance runs at most once, each in a worker thread under the
  instance's timeout (``settings.phase_timeout`` or its ``timeout``). Every other call
  into plugin code (``disk_estimate``, ``bytes_written``, ``streams``, the notify hooks)
  goes through the same timed invoker. A call that raises or times out, or one the table
  refuses, is recorded in the manifest (``plugins.NAME.status`` ``failed``/``timeout``
  with the error) and as an ``error`` event; the other plugins go on.
* ``start``/``arm`` run only when no preflight found a fatal problem. After a
  ``start``/``arm`` that raised or timed out, ``cleanup`` must release what it took.
* ``finalize`` does not run after a ``stop`` or ``persist`` that timed out (it may still
  be running). ``cleanup`` may find a timed-out phase still running in its abandoned thread.
* ``cleanup`` runs before the final manifest is written, so its failures reach the
  manifest and the exit status.
* Collectors start in profile order, stop all at once newest first, persist and finalize
  in parallel.
* While armed, the files a collector lists in ``streams()`` are fdatasync'ed every
  ``settings.sync_interval`` seconds, from the core's own thread.

The stop protocol (``scoutfs_collect/core/stop.py``): a trigger's ``fire``, the disk-space
watchdog, SIGINT/SIGTERM, ``scoutfs-collect stop`` (control socket) and the cluster
coordinator (``run --control-stdin``) all post one ``StopRequest`` (type, reason, durable)
into one inbox; the first decides the trigger. The socket and stdin take the same JSON
lines. After every stop: stop -> persist -> fsync -> ``durable`` -> the ``triggered``
notify hook -> finalize -> cleanup -> manifest -> archive.

An *analyzer* reads an archive (or a cluster bundle) after the fact, for
``inspect --findings`` and the report's Findings section: it declares the source kinds it
reads (``sources``), is handed their records by one streaming pass shared by every
analyzer (:meth:`Analyzer.record`), and yields :class:`Finding` objects from
:meth:`Analyzer.finish`. It never runs during a capture and has no phases.

The public API is what :mod:`scoutfs_collect` exports; everything else in the package is
internal and may change between releases.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Iterable, List, Optional, Tuple, Union

from scoutfs_collect.plugin.finding import AnalysisContext, Finding, Record
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
    #: Under ``check`` only: the pid of the live scoutfs-collect holding the host lock, so
    #: a preflight can tell its live files (a tracefs instance) from a killed run's.
    live_run_pid: Optional[int] = None
    #: The run's output directory (``settings.output_dir``): the work dir is made in it.
    #: None where a plugin is built outside a run.
    output_dir: Optional[Path] = None

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

    def persist(self) -> None:
        """Write and fsync what exists only in memory; runs after every stop, before the
        ``durable`` event (see the module doc). Default: nothing held in memory."""

    def finalize(self) -> None:
        """Write the output files into ``self.ctx.workdir``."""

    def bytes_written(self) -> int:
        """Bytes recorded so far, for the live status line."""
        return directory_size(self.ctx.workdir)

    def streams(self) -> List[Path]:
        """The files this instance appends to while it records (a pcap ring, a followed
        log, a counter series): the one way a plugin declares what it streams.

        While the run is armed the core fdatasyncs each of them that changed, every
        ``settings.sync_interval`` seconds, from its own thread, so a node powered off
        without warning loses at most about that much. Called from that thread: be
        quick, do not block, list files inside ``ctx.workdir`` (missing ones are
        skipped). Write through to the kernel (flush) as you go, or the sync finds
        the data still in your own buffer. Default: none.
        """
        return []


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
        """Stop the watcher and wait for it (5 s at most: a watcher that does not end is
        this trigger's failure, not a hung run)."""
        if not self._watcher.stop(timeout=5.0):
            raise TimeoutError(f"the watcher thread of {self.ctx.name} did not end within 5 s")


class Analyzer:
    """Base class of analyzer types: rules over an archive's records that yield findings.
    The class docstring is its user documentation (``scoutfs-collect plugins``).

    ``sources``: the kinds it reads, of ``kmsg`` (the kernel log), ``ftrace``,
    ``packets``, ``counters`` (scoutfs counter values), ``sysinfo`` (the start and stop
    snapshots) and two that are not records: ``manifest`` (every archive has one) and
    ``bundle`` (the input is a cluster bundle). When a kind is in no node's archive the
    analyzer is *skipped*, with the reason, instead of reporting nothing found.

    One object per ``inspect --findings``: ``__init__(ctx)`` gets the
    :class:`AnalysisContext`; :meth:`record` is then called for each record of its kinds,
    on the timeline's one clock (aligned epoch seconds), in time order within each file
    of a source, node after node (not merged across sources or nodes: keep what you need
    and compare in :meth:`finish`); records after the trigger are included. Be quick and
    keep little: a full archive holds millions of records. ``packets`` records are every
    captured frame, each pcap ring in capture order, with ``data`` the decoded TCP segment
    or UDP datagram (:class:`~scoutfs_collect.analysis.packets.Segment`; None for other
    frames). Not yet: ``ftrace`` records carry their text only inside the timeline's window
    (outside it only their time), and ftrace events rebuilt from ``trace.dat`` or raw ring
    pages (an archive without ``trace.txt``) are not handed over. :meth:`finish` runs once,
    with ``ctx.nodes`` complete, and yields the findings (``relative`` is filled in for you).

    The built-in analyzers (``plugins/analyzers/``, each documented in its class): ``fence``
    (which fence path, the victim), ``kernel`` (stall, OOM, link and I/O lines), ``memory``
    (sysinfo), ``counters`` (scoutfs counters racing), ``clock`` (bundle clocks),
    ``coverage`` (what the kept history cannot show), ``tcp`` (Wireshark's TCP analysis of
    the cluster port per connection and direction: silences, retransmissions, zero
    windows, RST/FIN, unanswered keep-alives, duplicate ACKs) and ``quorum`` (gaps in the
    UDP quorum heartbeats, the heartbeat-delay kernel lines).
    """

    kind: ClassVar[str] = "analyzer"
    #: The type name shown by ``scoutfs-collect plugins``. Unique across all plugins.
    type_name: ClassVar[str] = ""
    #: Analyzers take no options (kept for the ``plugins`` listing).
    Options: ClassVar[type] = NoOptions
    #: The source kinds this analyzer reads (see the class docstring).
    sources: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, ctx: AnalysisContext) -> None:
        self.ctx = ctx

    def record(self, rec: Record) -> None:
        """One record of a kind in ``sources``."""

    def finish(self) -> Iterable[Finding]:
        """The findings, once every record was handed over."""
        return ()


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
