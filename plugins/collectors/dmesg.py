"""Collector ``dmesg``: the kernel log, the whole ring at start plus every line until stop."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from scoutfs_collect import Collector, Problem, hookimpl, option, run_command
from scoutfs_collect.system.kernel_log import (
    DEVICE,
    EpochClock,
    Gap,
    KmsgFollower,
    KmsgReader,
    KmsgRecord,
    SeqTracker,
    parse_stream,
    ring_size,
)
from scoutfs_collect.system.ringfile import HalfRotatingFile

RING_FILE = "kmsg-ring-at-start.raw"
FOLLOW_FILE = "kmsg-follow.raw"
OLD_FOLLOW_FILE = "kmsg-follow.old.raw"
JOURNAL_DIRS = ("/run/systemd/journal/socket", "/var/log/journal", "/run/log/journal")
MB = 1 << 20


def journal_present() -> bool:
    """A running journald or journal files on disk."""
    if os.path.exists(JOURNAL_DIRS[0]):
        return True
    return any(os.path.isdir(d) and any(os.scandir(d)) for d in JOURNAL_DIRS[1:])


def utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}Z"


class DmesgCollector(Collector):
    """Records the kernel log: the whole ring buffer as it is at start, then follows
    /dev/kmsg and writes each new line to disk as it arrives, so nothing is lost
    even if the kernel ring wraps many times during a long wait. The run's last
    lines (the trigger line included) are read before the stop completes.

    Output: dmesg.txt (`[seconds since boot] UTC time <facility.level> text`, with
    lost records marked), kmsg.jsonl (seq, level, facility, usec, epoch, text per
    line), the raw records (kmsg-*.raw) and, where a systemd journal exists,
    `journalctl -k -b -n 1000` (journalctl-kernel.txt). Epoch times are derived
    from the kernel's since-boot clock and are accurate to a few milliseconds.

    Changes on the system: nothing (it only reads the kernel log; unlike
    `dmesg -c` it never clears it).
    Overhead: a thread asleep in poll() on /dev/kmsg; one small write per burst of
    kernel lines. Disk: the ring (typically 128 KiB-1 MiB) plus what the kernel
    logs during the run, at most `max_mb` (the oldest half is dropped beyond it).
    Requirements: root, or read access to /dev/kmsg (kernel.dmesg_restrict).
    """

    type_name = "dmesg"

    @dataclasses.dataclass
    class Options:
        device: str = option(DEVICE, "Kernel log device to read.")
        max_mb: int = option(64, "Most MiB of followed kernel log kept; the oldest half is dropped.")

    def preflight(self) -> List[Problem]:
        problems: List[Problem] = []
        try:
            os.close(os.open(self.options.device, os.O_RDONLY | os.O_NONBLOCK))
        except OSError as exc:
            problems.append(Problem(f"cannot read {self.options.device}: {exc.strerror}",
                                    fix="run as root (or set kernel.dmesg_restrict=0)"))
        if self.options.max_mb < 1:
            problems.append(Problem(f"option 'max_mb' is {self.options.max_mb}, not >= 1",
                                    fix="set max_mb: to at least 1"))
        return problems

    def disk_estimate(self) -> int:
        # raw records, then dmesg.txt and kmsg.jsonl of the same lines at finalize
        return 3 * (2 * ring_size() + self.options.max_mb * MB)

    def start(self) -> None:
        self.workdir = Path(self.ctx.workdir)
        self.clock = EpochClock.measure()
        self.started = time.time()
        self.stopped: Optional[float] = None
        self.reader = KmsgReader(self.options.device)
        ring = self.reader.read_available()
        with open(self.workdir / RING_FILE, "wb") as f:
            f.write(b"".join(r.raw for r in ring))
        self.ring_count = len(ring)
        self.dropped: List[Tuple[int, int]] = []  # seq ranges removed by the size cap
        # first and last seq in FOLLOW_FILE and OLD_FOLLOW_FILE: a rotation then knows
        # what it drops without reading the file back on the reader thread
        self.follow_seqs: Optional[Tuple[int, int]] = None
        self.old_seqs: Optional[Tuple[int, int]] = None
        self.out = HalfRotatingFile(self.workdir / FOLLOW_FILE, self.workdir / OLD_FOLLOW_FILE,
                                    self.options.max_mb * MB)
        self.follower = KmsgFollower(self.reader, self._write, self.ctx.fail, f"dmesg-{self.ctx.name}")
        self.follower.start()

    def _write(self, records: List[KmsgRecord]) -> None:
        first = self.follow_seqs[0] if self.follow_seqs else records[0].seq
        self.follow_seqs = (first, records[-1].seq)
        if self.out.write(b"".join(r.raw for r in records)):  # this half became the old one
            if self.old_seqs is not None:
                self.dropped.append(self.old_seqs)
            self.old_seqs, self.follow_seqs = self.follow_seqs, None

    def stop(self) -> None:
        self.stopped = time.time()
        if self.follower.stop(timeout=1.0):  # drains what is readable: the trigger line
            self.out.close()
            self.reader.close()
        else:
            self.ctx.details["reader_hung"] = True

    def cleanup(self) -> None:
        """Stop following /dev/kmsg when the run ended without stop() (start succeeded,
        then the run was aborted)."""
        if getattr(self, "follower", None) is not None and self.stopped is None:
            self.stop()

    def finalize(self) -> None:
        parts: List[Tuple[str, List[KmsgRecord]]] = []
        for part, name in (("ring", RING_FILE), ("follow", OLD_FOLLOW_FILE),
                           ("follow", FOLLOW_FILE)):
            path = self.workdir / name
            if path.exists():
                parts.append((part, list(parse_stream(path.read_bytes(), str(path)))))
        gaps = self._write_outputs(parts)
        records = [r for _, recs in parts for r in recs]
        followed = sum(len(recs) for part, recs in parts if part == "follow")
        self.ctx.details.update({
            "device": self.options.device,
            "epoch_offset": round(self.clock.offset, 6),
            "ring_at_start": self.ring_count,
            "followed": followed,
            "first_seq": records[0].seq if records else None,
            "last_seq": records[-1].seq if records else None,
            "reader": self.reader.stats(),
            "gaps": [dataclasses.asdict(g) for g in gaps],
            "lost": sum(g.count for g in gaps),
        })
        if records:
            first, last = (round(self.clock.epoch(r.usec), 6) for r in (records[0], records[-1]))
            self.ctx.set_window(first, last)
        self.ctx.details["journal"] = self._save_journal()

    def _gap_reason(self, gap: Gap) -> Gap:
        for first, last in self.dropped:
            if first <= gap.first + gap.count - 1 and gap.first <= last:
                return Gap(gap.first, gap.count, f"dropped on disk: over max_mb={self.options.max_mb}")
        return gap

    def _write_outputs(self, parts: List[Tuple[str, List[KmsgRecord]]]) -> List[Gap]:
        tracker = SeqTracker()
        gaps: List[Gap] = []
        host = os.uname().nodename
        with open(self.workdir / "dmesg.txt", "w", encoding="utf-8") as txt, \
                open(self.workdir / "kmsg.jsonl", "w", encoding="utf-8") as jsonl:
            txt.write(f"# kernel log of {host} from {self.options.device}: the ring at "
                      f"start ({self.ring_count} records), then followed from {utc(self.started)}"
                      f" to {utc(self.stopped or time.time())}\n# UTC times are approximate "
                      f"(since-boot clock + offset {self.clock.offset:.6f} s measured at start)\n")
            marked = False
            for part, records in parts:
                if part == "follow" and not marked:
                    txt.write(f"-- following {self.options.device} from {utc(self.started)} --\n")
                    marked = True
                for r in records:
                    gap = tracker.see(r.seq)
                    if gap is not None:
                        gap = self._gap_reason(gap)
                        gaps.append(gap)
                        txt.write(f"-- {gap.describe()} --\n")
                    txt.write(self._line(r))
                    row = r.as_dict(self.clock)
                    row["part"] = part
                    jsonl.write(json.dumps(row, ensure_ascii=False) + "\n")
        return gaps

    def _line(self, r: KmsgRecord) -> str:
        # Kernel text may hold escape sequences: show them, never send them to a terminal.
        text = "".join(c if c.isprintable() or c in "\t\n" else f"\\x{ord(c):02x}"
                       for c in r.text).replace("\n", "\n    ")
        head = f"[{r.usec // 1000000:5d}.{r.usec % 1000000:06d}] {utc(self.clock.epoch(r.usec))}"
        line = f"{head} <{r.facility_name}.{r.level_name}> {text}\n"
        return line + "".join(f"    {k}={v}\n" for k, v in r.fields.items())

    def _save_journal(self) -> Dict[str, object]:
        if shutil.which("journalctl") is None or not journal_present():
            return {"saved": False, "note": "no systemd journal on this host"}
        argv = ["journalctl", "-k", "-b", "-n", "1000", "--no-pager"]
        try:
            result = run_command(argv, timeout=20)
        except Exception as exc:  # optional: a failure is only noted
            return {"saved": False, "note": f"{' '.join(argv)}: {exc}"}
        (self.workdir / "journalctl-kernel.txt").write_text(result.stdout, encoding="utf-8")
        note: Dict[str, object] = {"saved": True, "returncode": result.returncode}
        if result.returncode != 0:
            note["stderr"] = result.stderr.strip()[-500:]
        return note


@hookimpl
def scoutfs_collect_register(register):
    register.add_collector(DmesgCollector)
