"""The run's one event bus: every lifecycle event is emitted here once and reaches the
``--events-file`` (one JSON line each, for scripts and cluster coordination), the control
socket's waiting ``stop`` clients and the console (:func:`console_line`), in that order.

Every line has ``event`` and ``time`` (epoch seconds); events: ``started``, ``armed``,
``triggered`` (``trigger``, ``type``, ``reason``, ``trigger_time``; written the moment the
first trigger fires, before the stop), ``post_trigger`` (``seconds``: recording goes on
that long before the stop), ``stopped``, ``durable``, ``finalized``, ``archive``
(``path``), ``error`` (``plugin``, ``message``), ``finished`` (``exit_status``); under a
cluster coordinator (``--control-stdin``) also ``pong`` (``sent``: the coordinator's
time echoed, for its clock-offset estimate). Lines are flushed as they are written.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

log = logging.getLogger("scoutfs_collect")

Listener = Callable[[Dict[str, Any]], None]


def console_line(record: Dict[str, Any]) -> Optional[str]:
    """What the console (and the run log) says for an event, or None."""
    event = record["event"]
    if event == "started":
        return f"work dir: {record['workdir']}"
    if event == "armed":
        armed = ", ".join(record.get("triggers") or []) or "no triggers, Ctrl-C only"
        return f"armed: {armed}; waiting (Ctrl-C to stop and pack)"
    if event == "triggered":
        return f"triggered by {record.get('trigger')} ({record.get('type')}): {record.get('reason')}"
    if event == "post_trigger":
        return (f"recording {record['seconds']:.1f} s more (settings.post_trigger_seconds; "
                "Ctrl-C stops now)")
    if event == "durable":
        return f"durable: {record.get('files', 0)} files fsync'ed"
    return None


class EventLog:
    """Appends events to a file (or only to listeners when no path was given), then
    tells the console (through the ``scoutfs_collect`` logger, so the run log has it too).

    ``listeners`` (the control socket's waiting ``stop`` clients) get every record;
    a listener must not block and its exceptions are ignored."""

    def __init__(self, path: Optional[Path], console: bool = False) -> None:
        # Reentrant: a signal handler on the main thread may fire a trigger (and emit)
        # while that thread is inside emit().
        self._lock = threading.RLock()
        self._file = open(path, "a", encoding="utf-8") if path else None
        self.listeners: List[Listener] = []
        self.console = console  # say the lifecycle events on the console (a run's bus)

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": time.time(), **fields}
        for listener in list(self.listeners):
            try:
                listener(record)
            except Exception:  # noqa: S110 - a broken listener must not break the run
                pass
        if self._file is not None:
            with self._lock:
                try:
                    self._file.write(json.dumps(record, default=str) + "\n")
                    self._file.flush()
                except (OSError, ValueError):
                    pass
        line = console_line(record) if self.console else None
        if line is not None:
            log.info(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
