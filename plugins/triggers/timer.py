"""Trigger ``timer``: fire a fixed time after arming."""

from __future__ import annotations

import dataclasses
import math
from typing import List

from scoutfs_collect import FireCallback, Problem, ThreadedTrigger, Wakeup, hookimpl, option


class TimerTrigger(ThreadedTrigger):
    """Fires `after` seconds after the trigger is armed.

    For timed captures ("record 10 minutes of this workload") and for trying a
    profile out. The reason recorded is "timer: N s elapsed".

    Changes on the system: nothing.
    Overhead: none (one sleeping thread, no periodic wake-up).
    Requirements: none.
    """

    type_name = "timer"

    @dataclasses.dataclass
    class Options:
        after: float = option(10.0, "Seconds from arming until the trigger fires.")

    def preflight(self) -> List[Problem]:
        after = self.options.after
        if not (math.isfinite(after) and after >= 0):
            return [Problem(f"option 'after' is {after}, not a number of seconds >= 0",
                            fix="set after: to the number of seconds to record, e.g. 600")]
        return []

    def watch(self, fire: FireCallback, wakeup: Wakeup) -> None:
        if not wakeup.wait(self.options.after):
            fire(f"timer: {self.options.after:g} s elapsed")


@hookimpl
def scoutfs_collect_register(register):
    register.add_trigger(TimerTrigger)
