"""The old scoutfs tracing script's way of stopping its ring, for the comparison of freeze
modes (as its README and the project's notes on it say: the script waits with `journalctl
-t kernel -g PATTERN -f` into a file it polls every 0.5 s, then SIGINTs trace-cmd).

Here on a private tracefs instance (the script records in the top-level ring with
`trace-cmd record`, a global change the tier does not make): the same events, a loop that
reads the kernel log every 0.5 s and turns the instance off once the pattern is there.
journald's own ~250 ms publishing delay is not reproduced (there is no journald in the
guest): this stops *earlier* than the script would, never later."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import List, Optional

from scoutfs_collect.system.kernel_log import KmsgReader
from scoutfs_collect.system.tracefs import TraceInstance

POLL_S = 0.5  # the script's spinner loop


class OldScriptStop:
    """A ring stopped from user space the way the old script stops: see the module doc."""

    def __init__(self, root: Path, name: str, events: List[str], pattern: str, buffer_kb: int = 4096) -> None:
        self.inst = TraceInstance(name, root)
        self.inst.create()
        self.inst.set_buffer_size_kb(buffer_kb)
        self.inst.enable_events(events)
        self.pattern = re.compile(pattern)
        self.stopped_at: Optional[float] = None
        self.line: Optional[str] = None
        self._end = threading.Event()
        self._kmsg = KmsgReader(from_end=True)  # like `-n 1 -S now`: only new lines
        self.inst.tracing_on = True
        self._thread = threading.Thread(target=self._loop, name="oldscript", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._end.wait(POLL_S):
            hit = next((r.text for r in self._kmsg.read_available() if self.pattern.search(r.text)), None)
            if hit is not None:
                self.inst.tracing_on = False
                self.stopped_at, self.line = time.time(), hit.strip()
                return

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def trace(self) -> List[str]:
        """The ring as text, comment lines dropped."""
        return [ln for ln in self.inst.read("trace").splitlines() if ln and not ln.startswith("#")]

    def close(self) -> None:
        self._end.set()
        self._thread.join(10)
        self._kmsg.close()
        if self.inst.exists():
            self.inst.remove()
