"""The target tier: scoutfs-collect on a real EL kernel, inside a guest booted by
tools/test-targets.sh. Collected only there (tests/conftest.py ignores this directory unless
SCOUTFS_COLLECT_TARGET_GUEST is set), and each guest kind runs only its own files:

- ``main`` (--cpus 2): the demo profile, the freeze self-test at two console levels,
  ``stop --wait durable``, and scoutfs itself when SCOUTFS_COLLECT_TARGET_SCOUTFS names a
  directory with ``scoutfs.ko`` and the ``scoutfs`` utility built for this kernel (one
  mount; then a real fence between two mounts, test_fence.py);
- ``hotplug`` (-smp 2,maxcpus=8): a capture with more possible than online CPUs.

What a test saw that the compatibility table needs (freeze mode, events past the fencing
line) goes to SCOUTFS_COLLECT_TARGET_RESULTS/observations.jsonl, one JSON object a line."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Callable, Iterator

import pytest

from scoutfs_collect.system import tracefs

GUEST = os.environ.get("SCOUTFS_COLLECT_TARGET_GUEST", "")
SCOUTFS_DIR = os.environ.get("SCOUTFS_COLLECT_TARGET_SCOUTFS", "")
RESULTS = os.environ.get("SCOUTFS_COLLECT_TARGET_RESULTS", "")

_FILES = {
    "main": ["test_demo.py", "test_freeze.py", "test_stop_durable.py", "test_scoutfs.py", "test_fence.py"],
    "hotplug": ["test_hotplug.py"],
}
if GUEST not in _FILES:
    raise pytest.UsageError(f"SCOUTFS_COLLECT_TARGET_GUEST={GUEST!r}: expected main or hotplug")
_wanted = set(_FILES[GUEST])
if not (SCOUTFS_DIR and (Path(SCOUTFS_DIR) / "scoutfs.ko").is_file()):
    _wanted -= {"test_scoutfs.py", "test_fence.py"}  # test-targets.sh says "scoutfs: not built" instead
collect_ignore = sorted(p.name for p in Path(__file__).parent.glob("test_*.py") if p.name not in _wanted)


@pytest.fixture
def observe(request) -> Callable[[str, object], None]:
    """``observe(key, value)``: record what this test saw for the per-kernel summary."""

    def write(key: str, value: object) -> None:
        if not RESULTS:
            return
        line = {"kernel": platform.release(), "test": request.node.name, "key": key, "value": value}
        with open(Path(RESULTS) / "observations.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")

    return write


@pytest.fixture(scope="session")
def tracing_root() -> Path:
    root, _ = tracefs.ensure_mounted()
    return root


@pytest.fixture
def top_tracing_on(tracing_root: Path) -> Iterator[Path]:
    """The top-level ``tracing_on`` file. It must read 1 before the test (a fresh guest);
    a test that saw it turned off restores it afterwards, so one failure in this disposable
    guest does not also fail the tests after it."""
    path = tracing_root / "tracing_on"
    assert path.read_text().strip() == "1", "the guest booted with top-level tracing_on 0"
    yield path
    if path.read_text().strip() != "1":
        path.write_text("1")


@pytest.fixture
def printk_levels() -> Iterator[Callable[[str], None]]:
    """``printk_levels("7 4 1 7")`` sets /proc/sys/kernel/printk (console, default,
    minimum, boot-default levels); the boot value comes back at the end."""
    proc = Path("/proc/sys/kernel/printk")
    before = " ".join(proc.read_text().split())

    def set_levels(levels: str) -> None:
        proc.write_text(levels)
        assert " ".join(proc.read_text().split()) == levels

    yield set_levels
    proc.write_text(before)
