"""While armed: wait for a stop request, watch free disk space, show the status line.

The main thread sleeps in :meth:`StopInbox.wait` (a pipe every stop request and signal
writes into), waking once a second for the disk-space watchdog and the live status line
(or a log line every ``settings.status_interval`` seconds when stdout is no terminal).
Each collector's ``bytes_written`` is called through the invoker under a short timeout:
a plugin that hangs there shows ``?`` and never stalls the watchdog.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import List

from scoutfs_collect.core.checks import free_mb
from scoutfs_collect.core.instances import PluginInstance
from scoutfs_collect.core.lifecycle import Invoker
from scoutfs_collect.core.profile import Settings
from scoutfs_collect.core.stop import StopInbox, StopRequest
from scoutfs_collect.ui.console import Console, human_bytes, human_seconds

log = logging.getLogger("scoutfs_collect")
TICK = 1.0
#: How long the status line waits for one collector's bytes_written.
STATUS_CALL_TIMEOUT = 0.5


def wait_armed(inbox: StopInbox, invoker: Invoker, collectors: List[PluginInstance],
               triggers: List[PluginInstance], settings: Settings, workdir: Path,
               console: Console, started: float) -> None:
    """Return once a stop was asked for (or the disk-space watchdog asked for one)."""
    last_status = time.monotonic()
    floor = settings.min_free_mb
    while not inbox.pending():
        inbox.wait(TICK)
        if inbox.pending():
            break
        try:
            free = free_mb(workdir)
        except OSError:
            free = float("inf")
        if free < floor:
            inbox.post(StopRequest(
                type="disk-space", reason=f"free space in {workdir.parent} fell to {free:.0f} MiB "
                                          f"(settings.min_free_mb={floor})"))
            break
        if console.tty:
            console.status(status_text(invoker, collectors, triggers, free, started))
        elif time.monotonic() - last_status >= settings.status_interval:
            last_status = time.monotonic()
            log.info(status_text(invoker, collectors, triggers, free, started))
    console.end_status()


def status_text(invoker: Invoker, collectors: List[PluginInstance], triggers: List[PluginInstance],
                free: float, started: float) -> str:
    """``recording 1m 5s | ftrace 12.0 MiB | ... | free 3.2 GiB | armed: kmsg``."""
    parts = []
    for inst in collectors:
        outcome = invoker.call(inst.name, "bytes_written", inst.plugin.bytes_written,
                               STATUS_CALL_TIMEOUT, once=True)
        parts.append(f"{inst.name} {human_bytes(outcome.value) if outcome.ok else '?'}")
    armed = ", ".join(t.name for t in triggers) or "Ctrl-C"
    return (f"recording {human_seconds(time.time() - started)} | {' | '.join(parts)} | "
            f"free {human_bytes(free * 1024 * 1024)} | armed: {armed}")
