"""Test-only plugins loaded with --plugin-dir: a marker collector and a faulty collector.

They exist because fault injection (raise, hang, slow in a chosen phase) cannot be
done with a real collector; they use only the public plugin API, like a site plugin.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from typing import List

from scoutfs_collect import Collector, Problem, Trigger, hookimpl, option


class Marker(Collector):
    """Writes marker.txt with the target and the phases it went through."""

    type_name = "test-marker"

    @dataclasses.dataclass
    class Options:
        text: str = option("hello", "Text written into marker.txt.")

    def start(self) -> None:
        self.phases = ["start"]

    def stop(self) -> None:
        self.phases.append("stop")

    def finalize(self) -> None:
        self.phases.append("finalize")
        (self.ctx.workdir / "marker.txt").write_text(
            f"{self.options.text}\n{self.ctx.target}\n{' '.join(self.phases)}\n")


class Faulty(Collector):
    """Raises, hangs or runs slowly in the phase named by its options."""

    type_name = "test-faulty"

    @dataclasses.dataclass
    class Options:
        raise_in: List[str] = option([], "Phases that raise RuntimeError.")
        hang_in: List[str] = option([], "Phases that block for 'hang_seconds'.")
        hang_seconds: float = option(3600.0, "How long a hanging phase blocks.")
        problem: str = option("", "A fatal preflight problem to report.")

    def _phase(self, name: str) -> None:
        if name in self.options.raise_in:
            raise RuntimeError(f"injected failure in {name}")
        if name in self.options.hang_in:
            threading.Event().wait(self.options.hang_seconds)

    def preflight(self) -> List[Problem]:
        self._phase("preflight")
        return [Problem(self.options.problem, "remove the problem option")] if self.options.problem else []

    def start(self) -> None:
        self._phase("start")
        (self.ctx.workdir / "started.txt").write_text(f"{time.time()}\n")

    def stop(self) -> None:
        self._phase("stop")

    def finalize(self) -> None:
        self._phase("finalize")


class Never(Trigger):
    """A trigger that never fires (the run ends by signal or another trigger)."""

    type_name = "test-never"

    def arm(self, fire) -> None:
        pass


def _hook_log(record: dict) -> None:
    path = os.environ.get("SCOUTFS_COLLECT_TEST_HOOKLOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record, default=str) + "\n")


@hookimpl
def scoutfs_collect_run_started(run):
    _hook_log({"hook": "run_started", "run": run})


@hookimpl
def scoutfs_collect_triggered(run, trigger):
    _hook_log({"hook": "triggered", "trigger": trigger})


@hookimpl
def scoutfs_collect_archive_written(run, path):
    _hook_log({"hook": "archive_written", "path": str(path)})


@hookimpl
def scoutfs_collect_register(register):
    register.add_collector(Marker)
    register.add_collector(Faulty)
    register.add_trigger(Never)
