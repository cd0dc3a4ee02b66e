"""What the stand-in fence agent (tests/support/fence_agent.sh) recorded in its
``FENCE_AGENT_RECORD`` directory: whether and when it started, its argv, its environment."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List


class Agent:
    """The record of one stand-in agent run (the directory may not exist yet: ``ran``)."""

    def __init__(self, record: Path) -> None:
        self.record = record

    @property
    def ran(self) -> bool:
        return (self.record / "started").exists()

    @property
    def started(self) -> float:
        """Its start, epoch seconds (the first thing it did)."""
        return float((self.record / "started").read_text())

    @property
    def argv(self) -> List[str]:
        return (self.record / "argv").read_text().splitlines()

    @property
    def env(self) -> Dict[str, str]:
        lines = (self.record / "env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)
