"""Shared test helpers: waiting on conditions (never a bare sleep), kernel log lines, names,
plugins built outside the runner, a recording fire callback, archives of CLI runs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from scoutfs_collect import PluginContext, Target
from scoutfs_collect.demo import fixture
from scoutfs_collect.plugin import options
from scoutfs_collect.system.tracefs import TracefsError, TraceInstance

T = TypeVar("T")

def wait_for(condition: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Return the first truthy value of ``condition()``; fail the test after ``timeout`` s.

    Polls every 10 ms: this waits *for a condition*, it is not a delay.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def new_venv(venv: Path) -> List[str]:
    """Make a venv at ``venv``; the argv of a pip that installs into it. With pip 22.3 or
    newer the venv gets no pip of its own (ensurepip takes seconds): this interpreter's pip
    installs into it (``pip --python``)."""
    import pip

    if tuple(int(x) for x in pip.__version__.split(".")[:2]) >= (22, 3):
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        return [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    return [str(venv / "bin" / "python"), "-m", "pip"]


def unique(prefix: str) -> str:
    """A name no other test (or earlier run) uses: prefix + random hex."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def kmsg_write(text: str, level: int = 6) -> Tuple[float, float]:
    """Inject a real kernel log line through /dev/kmsg (root only); the epoch times just
    before and just after the write."""
    fd = os.open("/dev/kmsg", os.O_WRONLY)
    try:
        data = f"<{level}>{text}\n".encode()
        before = time.time()
        os.write(fd, data)
        return before, time.time()
    finally:
        os.close(fd)


def extract(archive, dest) -> Path:
    """Unpack an archive with the system tar (as support would); the top directory."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xaf", str(archive), "-C", str(dest)], check=True)
    (top,) = list(dest.iterdir())
    return top


def counter_names() -> List[str]:
    """The scoutfs counter names of the current sources (the project's packaged copy)."""
    return fixture.default_counter_names()


def write_marker_if_on(inst: TraceInstance, text: str) -> None:
    """Write a trace marker; once the instance is off the kernel refuses it (EBADF), and
    then nothing is recorded either way."""
    try:
        inst.write_marker(text)
    except TracefsError:
        pass


def make_plugin(cls, workdir: Path, target: Target = Target("127.0.0.1", 5000),
                name: Optional[str] = None, dry_run: bool = False, **values: Any):
    """``cls(ctx, options)`` as the runner builds it: ``values`` validated into ``cls.Options``,
    ``ctx.workdir`` created (parents too). ``name`` defaults to the type name."""
    name = name or cls.type_name
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = PluginContext(name=name, type_name=cls.type_name, target=target, workdir=workdir,
                        dry_run=dry_run, log=logging.getLogger(name))
    return cls(ctx, options.build(cls.Options, values))


class Fired:
    """A trigger's fire callback that records each call: ``reasons``, their ``at``
    (time.monotonic()) and ``event``, set on the first call. A second call shows up as a
    second reason, which the tests that compare ``reasons`` catch."""

    def __init__(self) -> None:
        self.reasons: List[str] = []
        self.at: List[float] = []
        self.event = threading.Event()

    def __call__(self, reason: str) -> None:
        self.at.append(time.monotonic())
        self.reasons.append(reason)
        self.event.set()


def archive_of(out: str) -> str:
    """The archive path from the last line of a run's (or pack's) stdout."""
    last = out.strip().splitlines()[-1]
    assert last.startswith("archive: "), out
    return last.split(": ", 1)[1]


def inspect(cli, archive: str) -> Dict:
    """The manifest of an archive, through ``scoutfs-collect inspect --json``."""
    result = cli.run("inspect", "--json", archive)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def slow_pack_profile(trigger: str) -> str:
    """A profile whose packing is slow enough to interrupt: 3 MiB of random data
    (blob/blob.bin, from the test-writer plugin) through xz takes ~1.5 s here.
    ``trigger`` is one line below ``triggers:``, e.g. ``"never: {type: test-never}"``."""
    return (
        "settings: {compression: xz, min_free_mb: 1}\n"
        "collectors:\n"
        "  marker: {type: test-marker}\n"
        "  blob: {type: test-writer, finalize_mb: 3, random: true}\n"
        "triggers:\n"
        f"  {trigger}\n"
    )
