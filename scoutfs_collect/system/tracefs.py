"""tracefs access: the one module that reads and writes ftrace files.

Every write goes to a private instance (``instances/NAME/...``); nothing here
changes a global (top-level) tracefs setting. Top-level files are only *read* (event
formats, ``header_page``, the list of events and CPUs, ``tracing_on``) -- the formats
are the same for every instance. The changes outside an instance: mounting tracefs
when it is not mounted at all (:func:`ensure_mounted`), and :class:`TopLevel` turning
the top-level ring back on when our own trigger turned it off (a kernel whose
event-trigger ``traceoff`` is global, see ``ftrace_freeze``).

``per_cpu/cpuN`` exists for every *possible* CPU, the ring only for online ones: an
offline CPU's ``stats`` and ``trace_pipe_raw`` fail with ENODEV (seen on 4.18). Such a
CPU is an empty one, listed in :attr:`TraceInstance.cpus_without_ring`.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import threading
import time
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional, Set, Tuple

from scoutfs_collect.system import proc
from scoutfs_collect.system.mounts import read_mounts
from scoutfs_collect.system.tracetext import TraceSpan as TraceSpan  # re-exported
from scoutfs_collect.system.tracetext import event_times as event_times
from scoutfs_collect.system.tracetext import line_time as line_time
from scoutfs_collect.system.tracetext import text_span as text_span

DEFAULT_ROOT = Path("/sys/kernel/tracing")
EPOCH_CLOCKS = (("boot", time.CLOCK_BOOTTIME), ("mono", time.CLOCK_MONOTONIC))


class TracefsError(RuntimeError):
    """tracefs is missing, or an instance file refused a write (message says why)."""


def find_root(mounts_text: Optional[str] = None) -> Optional[Path]:
    """Where tracefs is mounted (``/sys/kernel/tracing`` preferred), or None."""
    found = [Path(m.point) for m in read_mounts(mounts_text) if m.fstype == "tracefs"]
    if DEFAULT_ROOT in found:
        return DEFAULT_ROOT
    return found[0] if found else None


def ensure_mounted(dry_run: bool = False) -> Tuple[Path, bool]:
    """(tracefs root, whether it had to be mounted). Under ``dry_run`` nothing is mounted
    and the flag says it would be. Raises TracefsError when mounting fails."""
    root = find_root()
    if root is not None:
        return root, False
    if dry_run:
        return DEFAULT_ROOT, True
    if not DEFAULT_ROOT.is_dir():
        raise TracefsError(f"{DEFAULT_ROOT} does not exist: kernel built without CONFIG_FTRACE?")
    res = proc.run(["mount", "-t", "tracefs", "nodev", str(DEFAULT_ROOT)])
    if res.returncode != 0:
        raise TracefsError(f"mount -t tracefs nodev {DEFAULT_ROOT} failed: {res.stderr.strip()}")
    return DEFAULT_ROOT, True


def list_instances(root: Path = DEFAULT_ROOT) -> List[str]:
    """Names of the existing tracefs instances."""
    try:
        return sorted(p.name for p in (root / "instances").iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


def cpu_ids(root: Path = DEFAULT_ROOT) -> List[int]:
    """CPU numbers that have a ring buffer (``per_cpu/cpuN``)."""
    ids = [int(p.name[3:]) for p in (root / "per_cpu").glob("cpu*") if p.name[3:].isdigit()]
    return sorted(ids) or list(range(os.cpu_count() or 1))


def split_event(spec: str) -> Tuple[str, str]:
    """``"SYS:EVENT"`` -> (SYS, EVENT); ``"SYS:*"`` and ``"SYS"`` -> (SYS, "*")."""
    system, _, event = spec.partition(":")
    if not system or "/" in spec or system in (".", "..") or event in (".", ".."):
        raise ValueError(f"bad event '{spec}': expected SYSTEM:EVENT or SYSTEM:*")
    return system, event or "*"


def event_exists(events_dir: Path, spec: str) -> bool:
    """Whether ``spec`` names an existing event or system below ``events_dir``."""
    system, event = split_event(spec)
    path = events_dir / system if event == "*" else events_dir / system / event
    return path.is_dir()


@dataclasses.dataclass
class CpuStats:
    """One CPU's line of ``per_cpu/cpuN/stats``: what the ring holds and what it lost."""

    cpu: int
    entries: int = 0
    overrun: int = 0
    commit_overrun: int = 0
    bytes: int = 0
    dropped_events: int = 0
    oldest_event_ts: Optional[float] = None
    ring: bool = True  # False: an offline CPU (ENODEV), no ring, nothing recorded

    @classmethod
    def parse(cls, cpu: int, text: str) -> CpuStats:
        out = cls(cpu)
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip().replace(" ", "_"), value.strip()
            if key == "oldest_event_ts":
                out.oldest_event_ts = float(value)
            elif key in ("entries", "overrun", "commit_overrun", "bytes", "dropped_events"):
                setattr(out, key, int(value))
        return out


@dataclasses.dataclass
class EventSelection:
    """Which requested events were switched on in an instance, and which do not exist."""

    enabled: List[str] = dataclasses.field(default_factory=list)
    missing: List[str] = dataclasses.field(default_factory=list)


class TraceInstance:
    """One private ftrace instance, ``ROOT/instances/NAME``. All writes stay inside it."""

    def __init__(self, name: str, root: Path = DEFAULT_ROOT) -> None:
        if not name or "/" in name or name in (".", "..") or "\x00" in name:
            raise ValueError(f"bad tracefs instance name {name!r}")
        self.name = name
        self.root = Path(root)
        self.path = self.root / "instances" / name
        self.cpus_without_ring: Set[int] = set()  # ENODEV from per_cpu/cpuN (offline CPU)

    def __repr__(self) -> str:
        return f"TraceInstance({self.name!r})"

    # --- life cycle ---------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.is_dir()

    def create(self) -> None:
        """mkdir the instance; FileExistsError if it is already there."""
        os.mkdir(self.path)

    def remove(self, timeout: float = 3.0) -> bool:
        """rmdir the instance, retrying while it is busy (a reader holds it open).
        True if it is gone; raises OSError if it is still busy after ``timeout``."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while True:
            try:
                os.rmdir(self.path)
                return True
            except FileNotFoundError:
                return False
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
            pause.wait(0.05)

    # --- plain files ----------------------------------------------------------------
    def _file(self, rel: str) -> Path:
        path = self.path / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise ValueError(f"{rel!r} is not a file inside the instance")
        return path

    def read(self, rel: str) -> str:
        return self._file(rel).read_text(errors="replace")

    def write(self, rel: str, value: str, append: bool = False) -> None:
        """Write ``value`` to an instance file in one write(); the kernel's refusal is
        raised as TracefsError with the instance's ``error_log`` tail when it has one.
        ``append``: O_APPEND, as ``>>`` (set_ftrace_filter keeps what it holds)."""
        flags = os.O_WRONLY | (os.O_APPEND if append else 0)  # no O_TRUNC: it clears some files
        try:
            fd = os.open(self._file(rel), flags)
        except OSError as exc:
            raise TracefsError(f"{self.path / rel}: open for writing: {exc.strerror}") from exc
        try:
            os.write(fd, value.encode())
        except OSError as exc:
            log = self.error_log().strip().splitlines()
            hint = f"; error_log: {' | '.join(log[-3:])}" if log else ""
            raise TracefsError(f"{self.path / rel}: write {value!r}: {exc.strerror}{hint}") from exc
        finally:
            os.close(fd)

    def error_log(self) -> str:
        try:
            return self.read("error_log")
        except OSError:
            return ""

    # --- settings -------------------------------------------------------------------
    @property
    def tracing_on(self) -> bool:
        return self.read("tracing_on").strip() == "1"

    @tracing_on.setter
    def tracing_on(self, on: bool) -> None:
        self.write("tracing_on", "1" if on else "0")

    def set_buffer_size_kb(self, kb: int) -> int:
        """Set the per-CPU ring size; returns the size the kernel actually gave."""
        self.write("buffer_size_kb", str(int(kb)))
        return int(self.read("buffer_size_kb").split()[0])

    def trace_clocks(self) -> Tuple[List[str], str]:
        """(available clocks, current clock) of the instance."""
        names = self.read("trace_clock").split()
        current = next((n.strip("[]") for n in names if n.startswith("[")), "")
        return [n.strip("[]") for n in names], current

    def set_trace_clock(self, clock: str) -> None:
        self.write("trace_clock", clock)

    def use_epoch_clock(self) -> Tuple[str, Optional[float]]:
        """Switch to a trace clock user space can read too (``boot``, else ``mono``);
        (clock name, seconds to add to its timestamps for epoch time). The offset is
        None when neither exists and the clock is left as it is."""
        available, current = self.trace_clocks()
        for name, clock_id in EPOCH_CLOCKS:
            if name in available:
                self.set_trace_clock(name)
                return name, clock_offset(clock_id)
        return current, None

    def set_option(self, option: str, on: bool) -> None:
        self.write(f"options/{option}", "1" if on else "0")

    def option(self, option: str) -> bool:
        return self.read(f"options/{option}").strip() == "1"

    def enable_events(self, specs: List[str]) -> EventSelection:
        """Switch on each ``SYS:*`` / ``SYS:EVENT``; missing ones are listed, not raised.
        An event without an ``enable`` file (``ftrace:print``, the trace_marker event)
        is always recorded and counts as enabled."""
        sel = EventSelection()
        for spec in specs:
            system, event = split_event(spec)
            target = self.path / "events" / system
            if event != "*":
                target = target / event
            if not target.is_dir():
                sel.missing.append(spec)
                continue
            if (target / "enable").exists():
                self.write(str((target / "enable").relative_to(self.path)), "1")
            sel.enabled.append(spec)
        return sel

    def trigger(self, event: str) -> str:
        """Active triggers of ``SYS:EVENT`` (comment lines dropped)."""
        system, name = split_event(event)
        text = self.read(f"events/{system}/{name}/trigger")
        return "\n".join(ln for ln in text.splitlines() if ln and not ln.startswith("#"))

    def set_trigger(self, event: str, command: str) -> None:
        """Add a trigger (e.g. ``traceoff if msg ~ "*x*"``) to ``SYS:EVENT``."""
        system, name = split_event(event)
        self.write(f"events/{system}/{name}/trigger", command)

    def write_marker(self, text: str) -> None:
        """Write a line to the instance's ``trace_marker`` (event ``ftrace:print``)."""
        self.write("trace_marker", text)

    def clear(self) -> None:
        """Empty the instance's ring buffer."""
        fd = os.open(self._file("trace"), os.O_WRONLY | os.O_TRUNC)
        os.close(fd)

    # --- reading out ---------------------------------------------------------------
    def cpu_stats(self) -> List[CpuStats]:
        """One entry per CPU; an offline CPU (ENODEV) is an empty one with ``ring=False``."""
        out = []
        for cpu in cpu_ids(self.root):
            try:
                out.append(CpuStats.parse(cpu, self.read(f"per_cpu/cpu{cpu}/stats")))
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    self.cpus_without_ring.add(cpu)
                    out.append(CpuStats(cpu, ring=False))
        return out

    def read_trace(self, dest: Optional[Path] = None) -> TraceSpan:
        """Copy the text ``trace`` (not consuming) to ``dest``; first/last timestamps."""
        out = open(dest, "w") if dest is not None else None
        try:
            with open(self._file("trace"), errors="replace") as src:
                return text_span(src, out)
        finally:
            if out is not None:
                out.close()

    def subbuf_size(self) -> int:
        """Bytes per ring-buffer page as ``trace_pipe_raw`` hands them out."""
        try:
            return int(self.read("buffer_subbuf_size_kb").split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            return os.sysconf("SC_PAGE_SIZE")

    def dump_raw(self, dest_dir: Path) -> Dict[int, int]:
        """Drain each ``per_cpu/cpuN/trace_pipe_raw`` (non-blocking; this *consumes* the
        buffer) into ``dest_dir/cpuN``; bytes written per CPU. An offline CPU (ENODEV on
        open or read) gets an empty file, so ``cpuN`` keeps its place for trace-cmd."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        size = self.subbuf_size()
        written: Dict[int, int] = {}
        for cpu in cpu_ids(self.root):
            with open(dest_dir / f"cpu{cpu}", "wb") as out:
                written[cpu] = self._drain(cpu, out, size)
        return written

    def _drain(self, cpu: int, out: BinaryIO, size: int) -> int:
        total, fd = 0, -1
        try:
            fd = _open_pipe_raw(self._file(f"per_cpu/cpu{cpu}/trace_pipe_raw"))
            while True:
                chunk = os.read(fd, size)
                if not chunk:
                    break
                out.write(chunk)
                total += len(chunk)
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENODEV:
                raise
            if total == 0:
                self.cpus_without_ring.add(cpu)
        finally:
            if fd >= 0:
                os.close(fd)
        return total

    def save_headers(self, dest_dir: Path, events: List[str]) -> List[str]:
        """Copy what a reader needs to decode the raw pages: ``events/header_page``,
        ``header_event``, the ``ftrace`` formats, each enabled event's ``format``, the
        printk formats and comm names, the instance's clock and page size. Relative
        paths copied."""
        copied: List[str] = []
        wanted = "events/header_page events/header_event printk_formats saved_cmdlines saved_tgids".split()
        parsed = [split_event(spec) for spec in events]
        whole = {"ftrace"} | {system for system, event in parsed if event == "*"}
        for system in sorted(whole):
            formats = sorted((self.root / "events" / system).glob("*/format"))
            wanted += [str(p.relative_to(self.root)) for p in formats]
        wanted += [f"events/{s}/{e}/format" for s, e in parsed if s not in whole]
        for rel in dict.fromkeys(wanted):
            try:
                data = (self.root / rel).read_bytes()
            except OSError:
                continue
            (dest_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest_dir / rel).write_bytes(data)
            copied.append(rel)
        for rel in ("trace_clock", "buffer_subbuf_size_kb", "buffer_size_kb"):
            try:
                (dest_dir / f"instance.{rel}").write_text(self.read(rel))
                copied.append(f"instance.{rel}")
            except OSError:
                continue
        (dest_dir / "RESTORE").write_text(RESTORE_NOTE)
        return copied + ["RESTORE"]


RESTORE_NOTE = """\
cpuN are the instance's per-CPU ring pages (trace_pipe_raw); events/ holds the formats.
With trace-cmd: trace-cmd restore -i partial.dat -o trace.dat cpu0 cpu1 ... where
partial.dat comes from `trace-cmd restore -c -o partial.dat` on a machine running the
same kernel (it is kept here only if building trace.dat failed).
"""


def _open_pipe_raw(path: Path) -> int:
    """Open a ``trace_pipe_raw`` non-blocking (one name, so a test can fake an offline CPU)."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


class TopLevel:
    """The top-level (global) ring's ``tracing_on``, beside :class:`TraceInstance`'s: read
    to notice that a trigger of ours stopped the host's ring, and turned back *on* (the
    one global write, undoing our own change; it never turns it off)."""

    name = "(top level)"

    def __init__(self, root: Path = DEFAULT_ROOT) -> None:
        self.root = self.path = Path(root)

    @property
    def tracing_on(self) -> bool:
        return (self.path / "tracing_on").read_text().strip() == "1"

    @tracing_on.setter
    def tracing_on(self, on: bool) -> None:
        if not on:
            raise ValueError("the top-level ring is never stopped here")
        fd = os.open(self.path / "tracing_on", os.O_WRONLY)
        try:
            os.write(fd, b"1")
        finally:
            os.close(fd)


def clock_offset(clock_id: int) -> float:
    """Seconds to add to a ``clock_id`` reading to get epoch time (best of 5 samples)."""
    best = (float("inf"), 0.0)
    for _ in range(5):
        a = time.clock_gettime(clock_id)
        now = time.time()
        b = time.clock_gettime(clock_id)
        best = min(best, (b - a, now - (a + b) / 2))
    return best[1]


def trace_cmd() -> Optional[str]:
    """Path of the trace-cmd program, or None."""
    return shutil.which("trace-cmd")
