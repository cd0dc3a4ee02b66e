"""Test-only plugins loaded with --plugin-dir: a marker, faulty collectors and triggers, a writer.

They exist because fault injection (raise, hang, slow in a chosen phase) and filling a
disk at a known rate cannot be done with a real collector; they use only the public
plugin API, like a site plugin.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import List, Optional

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
        entered_file: str = option("", "File that gets one line 'NAME PHASE' as each phase begins.")

    def _phase(self, name: str) -> None:
        _entered(self.options.entered_file, self.ctx.name, name)
        if name in self.options.raise_in:
            raise RuntimeError(f"injected failure in {name}")
        if name in self.options.hang_in:
            threading.Event().wait(self.options.hang_seconds)

    def prepare(self) -> None:
        self._phase("prepare")

    def preflight(self) -> List[Problem]:
        self._phase("preflight")
        return [Problem(self.options.problem, "remove the problem option")] if self.options.problem else []

    def cleanup(self) -> None:
        self._phase("cleanup")

    def start(self) -> None:
        self._phase("start")
        (self.ctx.workdir / "started.txt").write_text(f"{time.time()}\n")

    def stop(self) -> None:
        self._phase("stop")

    def persist(self) -> None:
        self._phase("persist")

    def finalize(self) -> None:
        self._phase("finalize")

    def _call(self, name: str) -> None:
        """The calls that are not phases (raise_in/hang_in name them too; not logged)."""
        if name in self.options.raise_in:
            raise RuntimeError(f"injected failure in {name}")
        if name in self.options.hang_in:
            threading.Event().wait(self.options.hang_seconds)

    def bytes_written(self) -> int:
        self._call("bytes_written")
        return 0

    def disk_estimate(self) -> int:
        self._call("disk_estimate")
        return 0

    def streams(self) -> List[Path]:
        self._call("streams")
        return []


class FaultyTrigger(Trigger):
    """A trigger that never fires and raises, hangs or runs slowly in the phase named."""

    type_name = "test-faulty-trigger"
    Options = Faulty.Options

    _phase = Faulty._phase
    prepare = Faulty.prepare
    preflight = Faulty.preflight
    cleanup = Faulty.cleanup

    def arm(self, fire) -> None:
        self._phase("arm")

    def disarm(self) -> None:
        self._phase("disarm")


class Writer(Collector):
    """Writes fill.bin at rate_mb MiB/s while recording and blob.bin (finalize_mb MiB) at finalize.

    Details: bytes written, whether it ever got ENOSPC, the least free space (MiB) it
    saw in its work dir after each write.
    """

    type_name = "test-writer"

    @dataclasses.dataclass
    class Options:
        rate_mb: float = option(0.0, "MiB per second appended to fill.bin while recording.")
        chunk_kb: int = option(256, "Size of one write while recording.")
        finalize_mb: int = option(0, "MiB written to blob.bin at finalize.")
        random: bool = option(False, "Incompressible data (else zeros).")

    _thread: Optional[threading.Thread] = None

    def _data(self, size: int) -> bytes:
        return os.urandom(size) if self.options.random else bytes(size)

    def _note_free(self) -> None:
        st = os.statvfs(self.ctx.workdir)
        free = st.f_bavail * st.f_frsize / (1 << 20)
        old = self.ctx.details.get("min_free_mb")
        self.ctx.details["min_free_mb"] = free if old is None else min(old, free)

    def start(self) -> None:
        self.ctx.details.update(bytes=0, enospc=False)
        self._stop = threading.Event()
        if self.options.rate_mb > 0:
            self._thread = threading.Thread(target=self._fill, daemon=True, name="test-writer")
            self._thread.start()

    def _fill(self) -> None:
        chunk = self.options.chunk_kb * 1024
        interval = chunk / (self.options.rate_mb * (1 << 20))
        with open(self.ctx.workdir / "fill.bin", "ab") as f:
            while not self._stop.wait(interval):  # pacing the writer, not waiting for a condition
                try:
                    f.write(self._data(chunk))
                    f.flush()
                except OSError as exc:
                    self.ctx.details["enospc"] = exc.errno == errno.ENOSPC
                    self.ctx.fail(f"write failed: {exc}")
                    return
                self.ctx.details["bytes"] += chunk
                self._note_free()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.ctx.details["stopped_at"] = time.time()

    def finalize(self) -> None:
        with open(self.ctx.workdir / "blob.bin", "wb") as f:
            for _ in range(self.options.finalize_mb):
                f.write(self._data(1 << 20))
        self._note_free()


class Never(Trigger):
    """A trigger that never fires (the run ends by signal or another trigger)."""

    type_name = "test-never"

    def arm(self, fire) -> None:
        pass


def _entered(path: str, name: str, phase: str) -> None:
    if path:
        with open(path, "a") as f:
            f.write(f"{name} {phase}\n")


def _hook_log(record: dict) -> None:
    path = os.environ.get("SCOUTFS_COLLECT_TEST_HOOKLOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record, default=str) + "\n")
    # A site hook that hangs (SCOUTFS_COLLECT_TEST_HANG_HOOK=triggered): the run must go on.
    if os.environ.get("SCOUTFS_COLLECT_TEST_HANG_HOOK") == record["hook"]:
        threading.Event().wait(3600)


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
    register.add_collector(Writer)
    register.add_trigger(FaultyTrigger)
    register.add_trigger(Never)
