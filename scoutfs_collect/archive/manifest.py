"""manifest.json: what support reads first. Records built during the run, written atomically.

Top-level keys: ``format`` (1), ``tool``, ``host``, ``argv``, ``profile``, ``target``,
``times`` (epoch seconds, plus ``clocks`` at start and at trigger: realtime,
monotonic and boottime, which is what it takes to line up ftrace, kmsg and pcap
timestamps), ``trigger``, ``plugins`` and ``result``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from scoutfs_collect import __version__

FORMAT = 1
FILENAME = "manifest.json"


@dataclasses.dataclass
class TriggerRecord:
    """Why the run ended: the trigger instance, its type (``operator`` for Ctrl-C,
    SIGTERM or ``scoutfs-collect stop``; ``disk-space`` for the free-space watchdog)."""

    name: str
    type: str
    reason: str
    time: float


@dataclasses.dataclass
class PluginRecord:
    """One plugin instance's outcome."""

    kind: str
    type: str
    status: str = "skipped"  # ok | failed | timeout | skipped
    error: Optional[str] = None
    errors: List[str] = dataclasses.field(default_factory=list)
    phases: Dict[str, float] = dataclasses.field(default_factory=dict)
    stopped_at: Optional[float] = None
    files: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    window: Optional[Dict[str, Optional[float]]] = None
    details: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def record_error(self, message: str, timed_out: bool = False) -> None:
        self.errors.append(message)
        if self.error is None:
            self.error = message
        if timed_out:
            self.status = "timeout"
        elif self.status != "timeout":
            self.status = "failed"


def clocks() -> Dict[str, float]:
    """The three clocks read back to back, to convert timestamps between them."""
    return {
        "realtime": time.time(),
        "monotonic": time.clock_gettime(time.CLOCK_MONOTONIC),
        "boottime": time.clock_gettime(time.CLOCK_BOOTTIME),
    }


def host() -> Dict[str, str]:
    uname = platform.uname()
    return {
        "hostname": socket.gethostname(),
        "kernel": uname.release,
        "kernel_version": uname.version,
        "machine": uname.machine,
    }


def tool() -> Dict[str, str]:
    return {"name": "scoutfs-collect", "version": __version__, "python": platform.python_version()}


def assemble(*, argv: List[str], profile: Any, target: Any, times: Dict[str, Any],
             trigger: Optional[TriggerRecord], plugins: Dict[str, PluginRecord],
             exit_status: Optional[int], notes: List[str]) -> Dict[str, Any]:
    """The manifest document of a run (``exit_status`` None while the run goes on)."""
    profile_doc = dict(profile.document)
    profile_doc.update(name=profile.name, source=profile.source,
                       settings=dataclasses.asdict(profile.settings))
    when = {k: times.get(k) for k in
            ("started", "armed", "triggered", "stopped", "durable", "finished")}
    when["clocks"] = {"start": times.get("clocks_at_start"),
                      "trigger": times.get("clocks_at_trigger")}
    return {
        "format": FORMAT,
        "tool": tool(),
        "host": host(),
        "argv": argv,
        "profile": profile_doc,
        "target": dataclasses.asdict(target),
        "times": when,
        "trigger": dataclasses.asdict(trigger) if trigger else None,
        "plugins": {name: dataclasses.asdict(record) for name, record in plugins.items()},
        "result": {"exit_status": exit_status, "complete": exit_status is not None,
                   "notes": notes},
    }


def write(workdir: Path, manifest: Dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (temp file, fsync, rename)."""
    path = workdir / FILENAME
    tmp = workdir / f".{FILENAME}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read(workdir: Path) -> Dict[str, Any]:
    """The manifest in a work dir ({} when missing or unreadable)."""
    try:
        return json.loads((workdir / FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}

