"""One ftrace capture as a user runs it, ended by a fencing line in the kernel log, and what
its archive says about the freeze: shared by the freeze, hotplug and scoutfs tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

from tests.support.cli import Cli, finish
from tests.support.helpers import archive_of, extract, kmsg_write, unique


@dataclass
class Frozen:
    """What the archive of a capture ended by ``line`` shows."""

    nonce: str  # in the fencing line and the markers after it
    code: int
    stderr: str
    manifest: Dict
    trace: List[str]  # ftrace/trace.txt, comment lines dropped
    top: Path  # the extracted archive

    @property
    def ftrace(self) -> Dict:
        return self.manifest["plugins"]["ftrace"]["details"]

    def records_after(self, text: str) -> List[str]:
        """Trace records after the last console record holding ``text`` (all records when
        the line is not in the trace: the ring was not frozen by it)."""
        hits = [i for i, line in enumerate(self.trace) if " console: " in line and text in line]
        return self.trace[hits[-1] + 1:] if hits else list(self.trace)


def ftrace_profile(cli: Cli, instance: str, nonce: str, events: str = '["sched:sched_switch"]') -> Path:
    """A small profile: ftrace that freezes on ``nonce``'s fencing line, the kernel log, and a
    kmsg trigger on the same line."""
    return cli.profile(f"""\
settings: {{compression: zstd, min_free_mb: 1}}
collectors:
  dmesg: {{}}
  ftrace:
    instance: {instance}
    events: {events}
    buffer_size_kb: 512
    freeze_on: ["*{nonce} reconnect timed out, fencing*"]
triggers:
  fencing: {{type: kmsg, pattern: '{nonce} reconnect timed out, fencing'}}
""")


def fencing_line(nonce: str, port: int = 7000) -> str:
    return f"scoutfs f.000001.r.000002: client 127.0.0.1:{port} {nonce} reconnect timed out, fencing"


def run_until_fencing(cli: Cli, tmp: Path, armed_timeout: float = 180, finish_timeout: float = 300) -> Frozen:
    """Start a capture with :func:`ftrace_profile`, wait until it is armed, log the fencing
    line at level 6 and then a few marker lines, and read its archive."""
    nonce, instance = unique("target"), unique("sc_target")
    proc = cli.start("--profile", str(ftrace_profile(cli, instance, nonce)), "--output-dir",
                     str(cli.out), "--events-file", str(cli.events), "127.0.0.1", "7000")
    cli.wait_event("armed", proc, timeout=armed_timeout)
    kmsg_write(fencing_line(nonce))
    for i in range(3):  # the kernel logs on: a frozen ring keeps none of these
        kmsg_write(f"{nonce} after-{i}")
    code, out, err = finish(proc, timeout=finish_timeout)
    if code != 0:
        return Frozen(nonce, code, err, {}, [], tmp)
    top = extract(archive_of(out), tmp / "x")
    manifest = json.loads((top / "manifest.json").read_text())
    trace_txt = top / "ftrace" / "trace.txt"
    trace = [line for line in trace_txt.read_text().splitlines() if line and not line.startswith("#")] \
        if trace_txt.is_file() else []
    return Frozen(nonce, code, err, manifest, trace, top)
