"""Trigger ``journal``: fire on a systemd journal message matching a regular expression."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
from pathlib import Path
from typing import List, Optional

from scoutfs_collect import ChildProcess, FireCallback, Problem, ThreadedTrigger, Wakeup, hookimpl, option

from .kmsg import DEFAULT_PATTERN, regex_problem

JOURNAL_SOCKET = "/run/systemd/journal/socket"
NO_JOURNAL = "no systemd journal on this host; use the kmsg trigger for kernel lines"
FIFO = "journalctl.fifo"  # journalctl's stdout; removed again before arm() returns
READ_MAX = 65536


class JournalTrigger(ThreadedTrigger):
    """Fires when a new systemd journal message matches the Python regular
    expression `pattern`, for messages that only reach the journal (a fence
    agent's or a daemon's own log). Kernel lines are better caught by the `kmsg`
    trigger: it is faster and works without journald.

    Runs `journalctl --follow -n 0 -o cat -g PATTERN` (plus `-u UNIT` or
    `-t IDENTIFIER` if set) and reads its output through a pipe, waking only when
    it prints. journald itself publishes new entries with up to ~250 ms delay, so
    expect this trigger to notice a message up to ~0.25 s late. journalctl's -g
    (PCRE2, case-insensitive for all-lowercase patterns) only pre-filters; each
    line is then matched with Python's re, case-sensitively.
    Messages logged in the moment between arming and journalctl's start are missed.

    Changes on the system: nothing (one journalctl process, ended at disarm).
    Overhead: one idle journalctl process; no periodic wake-up.
    Requirements: systemd-journald running, journalctl with pattern support
    (systemd 237 or newer: RHEL/Rocky 8 and 9).
    """

    type_name = "journal"

    @dataclasses.dataclass
    class Options:
        pattern: str = option(DEFAULT_PATTERN, "Python regular expression searched in messages.")
        unit: str = option("", "Only messages of this systemd unit (journalctl -u), if set.")
        identifier: str = option("", "Only messages with this syslog identifier (-t), if set.")

    def preflight(self) -> List[Problem]:
        problems: List[Problem] = []
        bad = regex_problem("pattern", self.options.pattern)
        if bad:
            problems.append(bad)
        if shutil.which("journalctl") is None:
            problems.append(Problem(f"journalctl not found: {NO_JOURNAL}",
                                    fix="dnf install systemd / apt-get install systemd, "
                                    "or use the kmsg trigger"))
        elif not os.path.exists(JOURNAL_SOCKET):
            problems.append(Problem(f"{JOURNAL_SOCKET} does not exist: {NO_JOURNAL}",
                                    fix="start systemd-journald, or use the kmsg trigger"))
        return problems

    def argv(self) -> List[str]:
        argv = ["journalctl", "--follow", "--no-pager", "--quiet", "--lines=0", "--output=cat"]
        if self.options.unit:
            argv += ["--unit", self.options.unit]
        if self.options.identifier:
            argv += ["--identifier", self.options.identifier]
        return argv + ["--grep", self.options.pattern]

    def arm(self, fire: FireCallback) -> None:
        self._regex = re.compile(self.options.pattern)
        self._stderr = Path(self.ctx.workdir) / "journalctl.stderr"
        fifo = Path(self.ctx.workdir) / FIFO
        os.mkfifo(fifo, 0o600)
        try:
            # The read end first: a non-blocking open needs no writer, and then
            # journalctl's open of the write end does not block either.
            self._fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                self._child: Optional[ChildProcess] = ChildProcess(
                    self.argv(), stdout=fifo, stderr=self._stderr,
                    on_unexpected_exit=self._child_died,
                ).start()
            except BaseException:
                os.close(self._fd)
                raise
        finally:
            fifo.unlink()  # both ends are open; nothing special is left in the work dir
        self.ctx.details["argv"] = self._child.argv
        super().arm(fire)

    def _child_died(self, code: int) -> None:
        try:
            err = self._stderr.read_text(errors="replace").strip().splitlines()[-1:]
        except OSError:
            err = []
        self.ctx.fail(f"journalctl exited with status {code}" + (f": {err[0]}" if err else ""))

    def watch(self, fire: FireCallback, wakeup: Wakeup) -> None:
        pending = b""
        while not wakeup.is_set():
            if not wakeup.wait_readable([self._fd]):
                continue
            try:
                data = os.read(self._fd, READ_MAX)
            except BlockingIOError:
                continue
            if not data:  # journalctl exited: _child_died reports it
                return
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                text = line.decode("utf-8", "replace")
                if self._regex.search(text):
                    fire(text)
                    return

    def disarm(self) -> None:
        super().disarm()
        child = getattr(self, "_child", None)
        if child is not None:
            child.stop(signal.SIGTERM, grace=2.0)
            self._child = None
            os.close(self._fd)


@hookimpl
def scoutfs_collect_register(register):
    register.add_trigger(JournalTrigger)
