"""Trigger ``journal``: fire on a systemd journal message matching a regular expression."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
from pathlib import Path
from typing import List, Optional

from scoutfs_collect import Problem, ThreadedTrigger, Wakeup, hookimpl, option
from scoutfs_collect.api import FireCallback
from scoutfs_collect.proc import ChildProcess

from .kmsg import DEFAULT_PATTERN, regex_problem

JOURNAL_SOCKET = "/run/systemd/journal/socket"
NO_JOURNAL = "no systemd journal on this host; use the kmsg trigger for kernel lines"
OUTPUT = "journal-follow.txt"


class JournalTrigger(ThreadedTrigger):
    """Fires when a new systemd journal message matches the Python regular
    expression `pattern`, for messages that only reach the journal (a fence
    agent's or a daemon's own log). Kernel lines are better caught by the `kmsg`
    trigger: it is faster and works without journald.

    Runs `journalctl --follow -n 0 -o cat -g PATTERN` (plus `-u UNIT` or
    `-t IDENTIFIER` if set) with its output in this trigger's work directory, and
    reads that file every `interval` seconds. journald itself publishes new entries
    with up to ~250 ms delay, so expect this trigger to notice a message 0.1 to 0.5 s
    late. journalctl's -g (PCRE2, case-insensitive for all-lowercase patterns)
    only pre-filters; each line is then matched with Python's re, case-sensitively.
    Messages logged in the moment between arming and journalctl's start are missed.

    Changes on the system: nothing (one journalctl process, ended at disarm).
    Overhead: one idle journalctl process; a file read every `interval` seconds.
    Requirements: systemd-journald running, journalctl with pattern support
    (systemd 237 or newer: RHEL/Rocky 8 and 9).
    """

    type_name = "journal"

    @dataclasses.dataclass
    class Options:
        pattern: str = option(DEFAULT_PATTERN, "Python regular expression searched in messages.")
        unit: str = option("", "Only messages of this systemd unit (journalctl -u), if set.")
        identifier: str = option("", "Only messages with this syslog identifier (-t), if set.")
        interval: float = option(0.25, "Seconds between reads of journalctl's output.")

    def preflight(self) -> List[Problem]:
        problems: List[Problem] = []
        bad = regex_problem("pattern", self.options.pattern)
        if bad:
            problems.append(bad)
        if not self.options.interval > 0:
            problems.append(Problem(f"option 'interval' is {self.options.interval}, not > 0",
                                    fix="set interval: to a number of seconds, e.g. 0.25"))
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
        self._output = Path(self.ctx.workdir) / OUTPUT
        self._stderr = Path(self.ctx.workdir) / "journalctl.stderr"
        self._child: Optional[ChildProcess] = ChildProcess(
            self.argv(), stdout=self._output, stderr=self._stderr,
            on_unexpected_exit=self._child_died,
        ).start()
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
        with open(self._output, "rb") as out:
            while not wakeup.wait(self.options.interval):
                pending += out.read()
                *lines, pending = pending.split(b"\n")
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


@hookimpl
def scoutfs_collect_register(register):
    register.add_trigger(JournalTrigger)
