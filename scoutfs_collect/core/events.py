"""``--events-file``: one JSON line per lifecycle event, for scripts and cluster coordination.

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
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

Listener = Callable[[Dict[str, Any]], None]


class EventLog:
    """Appends events to a file (or only to listeners when no path was given).

    ``listeners`` (the control socket's waiting ``stop`` clients) get every record;
    a listener must not block and its exceptions are ignored."""

    def __init__(self, path: Optional[Path]) -> None:
        # Reentrant: a signal handler on the main thread may fire a trigger (and emit)
        # while that thread is inside emit().
        self._lock = threading.RLock()
        self._file = open(path, "a", encoding="utf-8") if path else None
        self.listeners: List[Listener] = []

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": time.time(), **fields}
        for listener in list(self.listeners):
            try:
                listener(record)
            except Exception:  # noqa: S110 - a broken listener must not break the run
                pass
        if self._file is None:
            return
        with self._lock:
            try:
                self._file.write(json.dumps(record, default=str) + "\n")
                self._file.flush()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
