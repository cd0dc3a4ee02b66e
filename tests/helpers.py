"""Shared test helpers: waiting on conditions (never a bare sleep), kernel log lines, names."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable, TypeVar

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


def unique(prefix: str) -> str:
    """A name no other test (or earlier run) uses: prefix + random hex."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def kmsg_write(text: str, level: int = 6) -> None:
    """Inject a real kernel log line through /dev/kmsg (root only)."""
    fd = os.open("/dev/kmsg", os.O_WRONLY)
    try:
        os.write(fd, f"<{level}>{text}\n".encode())
    finally:
        os.close(fd)


def extract(archive, dest) -> Path:
    """Unpack an archive with the system tar (as support would); the top directory."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xaf", str(archive), "-C", str(dest)], check=True)
    (top,) = list(dest.iterdir())
    return top
