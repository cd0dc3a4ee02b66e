"""The hooks a scoutfs-collect plugin can implement. Read this first when writing one.

A plugin is a module (installed with an entry point in group ``scoutfs_collect``, or a
``.py`` file in a plugin directory) with functions decorated ``@hookimpl``::

    from scoutfs_collect import Collector, hookimpl

    class Uptime(Collector):
        '''Records /proc/uptime at start and at stop.'''
        type_name = "uptime"

    @hookimpl
    def scoutfs_collect_register(register):
        register.add_collector(Uptime)

Registration only names types. The runner builds one object per profile entry and
drives its lifecycle (see :mod:`scoutfs_collect.plugin.api`); hooks below the first only
notify and must return quickly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict

import pluggy

if TYPE_CHECKING:
    from scoutfs_collect.core.registry import Register

PROJECT = "scoutfs_collect"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def scoutfs_collect_register(register: Register) -> None:
    """Add the collector, trigger and analyzer types this plugin provides.

    Called once when plugins load. Call ``register.add_collector(cls)`` for each
    :class:`~scoutfs_collect.plugin.api.Collector` subclass, ``register.add_trigger(cls)``
    for each :class:`~scoutfs_collect.plugin.api.Trigger` subclass and
    ``register.add_analyzer(cls)`` for each :class:`~scoutfs_collect.plugin.api.Analyzer`
    subclass. ``cls.type_name`` must be
    unique across every installed plugin.
    """


@hookspec
def scoutfs_collect_run_started(run: Dict[str, Any]) -> None:
    """Notify: collectors are started and triggers armed.

    ``run`` holds ``workdir`` (str), ``target`` ({ip, port}) and ``profile`` (name).
    """


@hookspec
def scoutfs_collect_triggered(run: Dict[str, Any], trigger: Dict[str, Any]) -> None:
    """Notify: a trigger fired (or the operator stopped the run) and collectors are stopping.

    ``trigger`` holds ``name``, ``type``, ``reason`` and ``time`` (epoch seconds).
    Called after the stop signals went out, so it never delays the freeze.
    """


@hookspec
def scoutfs_collect_archive_written(run: Dict[str, Any], path: Path) -> None:
    """Notify: the archive is complete at ``path`` (e.g. to copy it off the node)."""
