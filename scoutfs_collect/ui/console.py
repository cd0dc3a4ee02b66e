"""What the operator sees: log lines, one live status line on a terminal, a progress bar.

Output goes to stderr (stdout carries only results such as ``archive: PATH``). A
terminal that goes away (ssh dropped, stdout closed) must never end a capture, so
every write here swallows OSError and turns the console off.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Optional, TextIO

from scoutfs_collect.system.kernel_text import escape_controls_in_lines


class Console:
    """Writes to one stream; live status and progress only when it is a terminal."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.tty = self.stream.isatty()
        except (OSError, ValueError):
            self.tty = False
        self.alive = True
        self._status_shown = False
        self._last_progress = 0.0

    def _write(self, text: str) -> None:
        if not self.alive:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.alive = False

    def line(self, text: str) -> None:
        """One log line (clears a live status line first)."""
        if self._status_shown:
            self._write("\r\x1b[K")
            self._status_shown = False
        self._write(text + "\n")

    def status(self, text: str) -> None:
        """Replace the live status line (terminal only)."""
        if self.tty:
            self._write("\r\x1b[K" + text)
            self._status_shown = True

    def progress(self, label: str, done: int, total: int) -> None:
        """A progress bar on a terminal; a line every 10 s otherwise."""
        now = time.monotonic()
        fraction = done / total if total else 1.0
        if self.tty:
            width = 30
            filled = int(width * fraction)
            self.status(
                f"{label} [{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%} "
                f"{human_bytes(done)}/{human_bytes(total)}"
            )
        elif now - self._last_progress >= 10 or done >= total:
            self._last_progress = now
            self.line(f"{label}: {fraction:.0%} ({human_bytes(done)} of {human_bytes(total)})")

    def end_status(self) -> None:
        if self._status_shown:
            self._write("\n")
            self._status_shown = False


class ConsoleHandler(logging.Handler):
    """Routes log records to the console as plain lines."""

    def __init__(self, console: Console, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break the run
            message = str(record.msg)
        prefix = "" if record.levelno < logging.WARNING else record.levelname.lower() + ": "
        # a trigger's reason is a kernel line: its tab or escape sequence shown, never sent
        self.console.line(prefix + escape_controls_in_lines(message))


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_seconds(s: float) -> str:
    """3725 -> '1h02m05s'."""
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def stdout_line(text: str) -> None:
    """A result line on stdout (``archive: PATH``); a closed stdout is survived."""
    try:
        print(text, flush=True)
    except OSError:  # stdout closed (ssh dropped): the archive is still there
        detach_stream("stdout")


def detach_stream(name: str) -> None:
    """Point a broken sys.stdout/stderr at /dev/null, so the exit flush cannot fail."""
    try:
        setattr(sys, name, open(os.devnull, "w"))
    except OSError:
        pass
