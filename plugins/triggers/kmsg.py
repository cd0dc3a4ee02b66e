"""Trigger ``kmsg``: fire on a kernel log line matching a regular expression."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import List, Optional

from scoutfs_collect import FireCallback, Problem, ThreadedTrigger, Wakeup, hookimpl, option
from scoutfs_collect.system.kernel_log import DEVICE, EpochClock, KmsgReader, KmsgRecord, follow

DEFAULT_PATTERN = r"client .* reconnect timed out, fencing|server closing"


def regex_problem(option_name: str, pattern: str) -> Optional[Problem]:
    """A Problem naming the option and the regex error, or None if ``pattern`` compiles."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return Problem(
            f"option '{option_name}': {pattern!r} is not a valid regular expression: {exc}",
            fix="write a Python regular expression (https://docs.python.org/3/library/re.html); "
            "escape literal ( ) [ ] . * + ? with a backslash",
        )
    return None


class KmsgTrigger(ThreadedTrigger):
    """Fires when a new kernel log line matches a regular expression.

    Reads /dev/kmsg from the moment the trigger is armed (older lines never fire)
    and searches each new line with the Python regular expression `pattern`; the
    run stops with the matching line as the reason. The default catches the server
    fencing a client (`client A.B.C.D:P reconnect timed out, fencing`) and a server
    shutting down (`server closing ...`). It notices a line within a few
    milliseconds: it waits in poll() on /dev/kmsg, with no polling loop.

    Changes on the system: nothing (it only reads the kernel log).
    Overhead: one regex search per kernel log line; idle otherwise.
    Requirements: root, or read access to /dev/kmsg (kernel.dmesg_restrict).
    """

    type_name = "kmsg"

    @dataclasses.dataclass
    class Options:
        pattern: str = option(DEFAULT_PATTERN, "Python regular expression searched in each line.")
        level_max: int = option(7, "Only lines of this level or more urgent (0 emerg .. 7 debug).")
        device: str = option(DEVICE, "Kernel log device to read.")

    def preflight(self) -> List[Problem]:
        problems: List[Problem] = []
        bad = regex_problem("pattern", self.options.pattern)
        if bad:
            problems.append(bad)
        if not 0 <= self.options.level_max <= 7:
            problems.append(
                Problem(
                    f"option 'level_max' is {self.options.level_max}, not a level 0..7",
                    fix="use 0 (emerg) .. 7 (debug); 7 matches every line",
                )
            )
        if not os.access(self.options.device, os.R_OK):
            problems.append(
                Problem(
                    f"cannot read {self.options.device}",
                    fix="run as root (or set kernel.dmesg_restrict=0)",
                )
            )
        return problems

    def arm(self, fire: FireCallback) -> None:
        self._regex = re.compile(self.options.pattern)
        # Opened (at the end of the log) before arm() returns: every later line is seen.
        self._reader = KmsgReader(self.options.device, from_end=True)
        self._clock = EpochClock.measure()
        super().arm(fire)

    def watch(self, fire: FireCallback, wakeup: Wakeup) -> None:
        def check(records: List[KmsgRecord]) -> bool:
            for record in records:
                if record.level <= self.options.level_max and self._regex.search(record.text):
                    self.ctx.details["matched"] = record.as_dict(self._clock)
                    fire(record.text)
                    return True
            return False

        follow(self._reader, wakeup, check)
        stats = self._reader.stats()
        if stats["lost"] or stats["garbage"]:
            self.ctx.details["reader"] = stats

    def disarm(self) -> None:
        super().disarm()
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()


@hookimpl
def scoutfs_collect_register(register):
    register.add_trigger(KmsgTrigger)
