"""Shared fixtures: the CLI runner with its own runtime/etc dirs, the guard on global
tracefs settings, armed triggers and started collectors that never outlive a test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from scoutfs_collect.system import tracefs
from tests.helpers import Fired, wait_for

HERE = Path(__file__).resolve().parent


class Cli:
    """Runs ``python -m scoutfs_collect`` with this test's own lock and config dirs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.out = tmp / "out"
        self.out.mkdir(mode=0o755)
        self.events = tmp / "events.jsonl"
        self.env = dict(os.environ)
        self.env["SCOUTFS_COLLECT_RUNTIME"] = str(tmp / "run")
        self.env["SCOUTFS_COLLECT_ETC"] = str(tmp / "etc")
        self.procs: List[subprocess.Popen] = []

    def argv(self, *args: str) -> List[str]:
        return [sys.executable, "-m", "scoutfs_collect", *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.env, cwd=self.tmp, capture_output=True,
                              text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        """Start a run in the background; stop it with .finish()."""
        p = subprocess.Popen(self.argv(*args), env=self.env, cwd=self.tmp,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def event_list(self) -> List[Dict]:
        if not self.events.exists():
            return []
        return [json.loads(line) for line in self.events.read_text().splitlines() if line.strip()]

    def wait_event(self, name: str, proc: Optional[subprocess.Popen] = None,
                   timeout: float = 60, nth: int = 1) -> Dict:
        """The nth event called ``name`` in the events file (runs may share the file)."""
        def found():
            matching = [e for e in self.event_list() if e["event"] == name]
            if len(matching) >= nth:
                return matching[nth - 1]
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"run exited {proc.returncode} before '{name}': "
                                     f"{proc.stderr.read() if proc.stderr else ''}")
            return None
        return wait_for(found, timeout, f"event {name}")

    def plugin_dir(self) -> Path:
        """A copy of tests/site_plugins that passes the ownership/permission checks."""
        d = self.tmp / "site_plugins"
        if not d.exists():
            shutil.copytree(HERE / "site_plugins", d)
            os.chmod(d, 0o755)
            for f in d.iterdir():
                os.chmod(f, 0o644)
        return d

    def profile(self, text: str, name: str = "p.yaml") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)


@pytest.fixture
def cli(tmp_path: Path):
    c = Cli(tmp_path)
    yield c
    c.cleanup()


def finish(proc: subprocess.Popen, timeout: float = 120):
    """Wait for a background run; its (returncode, stdout, stderr)."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# --- system-wide state and plugins run outside the runner --------------------------------

#: Global (top-level) tracefs files the ftrace code must never change.
TRACEFS_GLOBAL_FILES = [
    "tracing_on",
    "current_tracer",
    "trace_clock",
    "buffer_size_kb",
    "set_event",
    "tracing_cpumask",
    "events/enable",
    "events/sched/sched_switch/enable",
    "events/printk/console/enable",
    "events/printk/console/trigger",
    "options/overwrite",
]


def tracefs_global_state() -> Dict[str, str]:
    return {f: (tracefs.DEFAULT_ROOT / f).read_text() for f in TRACEFS_GLOBAL_FILES}


@pytest.fixture
def tracefs_untouched():
    """Fails the test when a global tracefs setting differs afterwards (use it with
    ``pytestmark = pytest.mark.usefixtures("tracefs_untouched")``)."""
    before = tracefs_global_state()
    yield
    assert tracefs_global_state() == before


@pytest.fixture
def armed():
    """``armed(trigger)`` arms it with a new :class:`tests.helpers.Fired` and returns that.
    Every trigger armed here is disarmed at the end, even when the test fails, and its
    watcher thread (when it has one) must be gone by then."""
    triggers: list = []

    def arm(trigger) -> Fired:
        fired = Fired()
        trigger.arm(fired)
        triggers.append(trigger)
        return fired

    yield arm
    for trigger in triggers:
        trigger.disarm()
    for trigger in triggers:
        thread = getattr(trigger, "_thread", None)
        assert thread is None or not thread.is_alive(), f"{trigger.ctx.name}: watcher still running"


class Started(list):
    """Collectors a test has started (``collectors.append(c)`` after ``c.start()``).

    ``append`` notes when the test calls ``c.stop()`` itself, so that the end of the test
    stops only the ones it did not stop (it failed first): a second stop() is not safe for
    every collector (scoutfs-counters would write to its closed series file)."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped: List[int] = []

    def append(self, collector) -> None:
        stop = collector.stop

        def stop_and_note() -> None:
            self.stopped.append(id(collector))
            stop()

        collector.stop = stop_and_note
        super().append(collector)

    def stop_the_rest(self) -> None:
        errors = []
        for collector in self:
            if id(collector) not in self.stopped:
                try:
                    collector.stop()
                except Exception as exc:  # stop the others all the same, then report it
                    errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def collectors():
    """Started collectors are stopped at the end even if the test fails: no reader or
    sampler thread outlives a test."""
    started = Started()
    yield started
    started.stop_the_rest()
