"""The mount table: the one parser of /proc/self/mounts."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import List, Optional, Union

MOUNTS = Path("/proc/self/mounts")
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclasses.dataclass(frozen=True)
class Mount:
    """One line of the mount table, its octal escapes (``\\040`` for a space) undone."""

    source: str
    point: str
    fstype: str
    options: str


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def read_mounts(text: Optional[str] = None) -> List[Mount]:
    """The mounts in ``text`` (lines as in /proc/self/mounts; default: the live table)."""
    if text is None:
        text = MOUNTS.read_text()
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            out.append(Mount(*(_unescape(f) for f in fields[:4])))
    return out


def mount_of(path: Union[str, Path], mounts: Optional[List[Mount]] = None) -> Mount:
    """The mount holding ``path``: the longest mount point above it (the later one wins
    between equal points, as the kernel stacks them)."""
    target = os.path.realpath(path)
    best = Mount("none", "/", "unknown", "")
    for m in read_mounts() if mounts is None else mounts:
        if (target == m.point or target.startswith(m.point.rstrip("/") + "/")) \
                and len(m.point) >= len(best.point):
            best = m
    return best
