"""Text traces (tracefs ``trace``, ``trace-cmd report``): the timestamp of a line, the
first and last of a file. Re-exported by :mod:`scoutfs_collect.system.tracefs`."""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Iterator, Optional, TextIO, Tuple

_TS = re.compile(r"\s(\d+\.\d{6,9}):\s")


@dataclasses.dataclass
class TraceSpan:
    """First and last timestamp (trace clock seconds) of the text ``trace``; lines copied."""

    first: Optional[float] = None
    last: Optional[float] = None
    lines: int = 0


def line_time(line: str) -> Optional[float]:
    """Timestamp (trace clock seconds) of one event line of a text trace (tracefs
    ``trace`` or ``trace-cmd report``); None for a comment or any other line."""
    m = None if line.startswith("#") else _TS.search(line)
    return float(m.group(1)) if m else None


def event_times(lines: Iterable[str]) -> Iterator[Tuple[float, str]]:
    """``(timestamp, line)`` of each event line of a text trace, with string searches
    instead of :func:`line_time`'s regex (the timeline reads every line of a full ring):
    the number before the first ``": "`` after the ``[CPU]`` field of
    ``TASK-PID [CPU] FLAGS TS: event: fields``. Comments and other lines are left out."""
    for line in lines:
        close = line.find("] ")
        if close < 0 or line.startswith("#"):
            continue
        colon = line.find(": ", close)
        if colon < 0:
            continue
        try:
            yield float(line[line.rfind(" ", close, colon) + 1:colon]), line
        except ValueError:
            continue


def text_span(lines: Iterable[str], copy_to: Optional[TextIO] = None) -> TraceSpan:
    """First/last timestamp of a text trace (tracefs ``trace`` or ``trace-cmd report``
    output, both in time order), optionally copying the lines."""
    span = TraceSpan()
    for line in lines:
        if copy_to is not None:
            copy_to.write(line)
        ts = line_time(line)
        if ts is not None:
            span.first = ts if span.first is None else span.first
            span.last = ts
            span.lines += 1
    return span
