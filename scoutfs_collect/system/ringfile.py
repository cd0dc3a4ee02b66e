"""A size-capped, append-only file kept as two halves: the one copy of the half-size
rotation that the followed kernel log and the counter series use."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import BinaryIO, Optional


class HalfRotatingFile:
    """Appends to ``path``; once it holds more than half of ``max_bytes`` it becomes
    ``old_path`` (replacing the older half) and a new ``path`` starts with ``header``.

    So the two files together never hold much more than ``max_bytes``, and what is kept
    is always the newest data. Writes are flushed at once: a reader (or a crash) sees
    every complete write.
    """

    def __init__(self, path: Path, old_path: Path, max_bytes: int, header: bytes = b"") -> None:
        self.path = Path(path)
        self.old_path = Path(old_path)
        self.half = max(1, max_bytes // 2)
        self.header = header
        self.rotations = 0
        self.rotated_at: Optional[float] = None  # epoch of the last rotation
        self._out: BinaryIO = open(self.path, "ab")
        self.size = self._out.tell()
        if self.size == 0 and header:
            self._write(header)

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._out.flush()
        self.size += len(data)

    def write(self, data: bytes) -> bool:
        """Append ``data``; True when this write made the file rotate."""
        self._write(data)
        if self.size <= self.half:
            return False
        self._out.close()
        os.replace(self.path, self.old_path)
        self.rotations += 1
        self.rotated_at = time.time()
        self._out = open(self.path, "ab")
        self.size = 0
        if self.header:
            self._write(self.header)
        return True

    def fileno(self) -> int:
        return self._out.fileno()

    @property
    def closed(self) -> bool:
        return self._out.closed

    def close(self) -> None:
        self._out.close()
