"""Shared helpers of the benchmarks: a scratch area that is always cleaned up, the real CLI
run with an isolated lock/config dir, a steady UDP sender with a sink, kernel log lines,
reading archives back, medians and tables.

Also runnable as a load generator in a process of its own (used by idle_cost.py):
    python bench/common.py loadgen --seconds S --getppid-rate N --udp-rate N --port P
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

# tests/support is the one helper set of tests and benches; the checkout goes last on
# sys.path so that the installed scoutfs_collect (not the source tree) is imported.
sys.path.append(str(Path(__file__).resolve().parents[1]))

from scoutfs_collect.system import tracefs  # noqa: E402
from scoutfs_collect.system.pcap import PcapReader  # noqa: E402
from tests.support.cli import cli_argv, cli_env, read_events  # noqa: E402,F401 - for the benches
from tests.support.helpers import extract, kmsg_write  # noqa: E402,F401 - for the benches

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"


# ------------------------------------------------------------------ scratch and cleanup


def _pdeathsig(sig: int) -> Callable[[], None]:
    parent = os.getpid()

    def preexec() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


class Scratch:
    """A temp dir, the processes and tracefs instances a bench made; all gone on exit.

    Use as a context manager; SIGTERM and SIGHUP are turned into KeyboardInterrupt so
    the same ``finally`` runs as for Ctrl-C.
    """

    def __init__(self, prefix: str, keep: bool = False, parent: Optional[str] = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"scoutfs-bench-{prefix}.", dir=parent))
        os.chmod(self.dir, 0o755)
        self.keep = keep
        self.procs: List[subprocess.Popen] = []
        self.instances: List[str] = []
        self.cleanups: List[Callable[[], None]] = []

    def __enter__(self) -> Scratch:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _raise_interrupt)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def popen(self, argv: Sequence[str], death_signal: int = signal.SIGKILL, **kw: Any) -> subprocess.Popen:
        """Start a process that dies (with ``death_signal``) if this one dies, by default
        in this scratch dir."""
        kw.setdefault("cwd", self.dir)  # never the checkout: see tests.support.cli.cli_argv
        p = subprocess.Popen([str(a) for a in argv], preexec_fn=_pdeathsig(death_signal),
                             stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def instance_name(self, tag: str) -> str:
        """A unique tracefs instance name, removed at close if it still exists."""
        name = f"scoutfs_bench_{tag}_{uuid.uuid4().hex[:8]}"
        self.instances.append(name)
        return name

    def close(self) -> None:
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as exc:  # keep cleaning
                print(f"cleanup: {exc}", file=sys.stderr)
        for p in self.procs:  # a scoutfs-collect run stops and packs on SIGTERM
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for name in self.instances:
            try:
                tracefs.TraceInstance(name).remove(timeout=5)
            except OSError as exc:
                print(f"could not remove tracefs instance {name}: {exc}", file=sys.stderr)
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"kept {self.dir}", file=sys.stderr)


# ------------------------------------------------------------------ the CLI


def capture_archive(scratch: Scratch, env: Dict[str, str], profile: Path, port: int,
                    load: Callable[[], str], end_line: str, timeout: float) -> Path:
    """A real capture through the CLI on 127.0.0.1:``port``: start it, wait until armed, run
    ``load`` (which says what it sent), write ``end_line`` into /dev/kmsg (the profile's
    trigger) and return the archive it packed."""
    events = scratch.dir / "events.jsonl"
    run = scratch.popen(cli_argv("--profile", profile, "--output-dir", scratch.dir, "--events-file", events,
                                 "127.0.0.1", port), env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, text=True)
    wait_event(events, "armed", run)
    sent = load()
    kmsg_write(end_line)
    out, _ = run.communicate(timeout=timeout)
    archive = Path(out.strip().splitlines()[-1].split(": ", 1)[1])
    print(f"capture: {archive} ({archive.stat().st_size / 1e6:.0f} MB), {sent}")
    return archive


def wait_event(path: Path, name: str, proc: subprocess.Popen, timeout: float = 60) -> Dict[str, Any]:
    """The first event ``name`` of the events file; raises if the run ends first."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in read_events(path) if e["event"] == name]
        if found:
            return found[0]
        if proc.poll() is not None:
            raise RuntimeError(f"scoutfs-collect exited {proc.returncode} before '{name}'")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no '{name}' event within {timeout} s")
        time.sleep(0.005)


# ------------------------------------------------------------------ load


class UdpLoad:
    """Steady UDP packets to 127.0.0.1:port from a thread, into a sink socket bound to the
    port (so no ICMP unreachable comes back). Send times are kept for counting."""

    def __init__(self, rate: float, size: int = 200) -> None:
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sink.bind(("127.0.0.1", 0))
        self.port = self.sink.getsockname()[1]
        self.rate, self.payload = rate, b"s" * size
        self.sent: List[float] = []
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._thread = threading.Thread(target=self._run, name="udp-load", daemon=True)

    def start(self) -> UdpLoad:
        self._thread.start()
        return self

    def _run(self) -> None:
        began, n, dest = time.monotonic(), 0, ("127.0.0.1", self.port)
        while not self._stop.wait(0.002):
            due = int((time.monotonic() - began) * self.rate)
            while n < due:
                try:
                    self._sock.sendto(self.payload, dest)
                    self.sent.append(time.time())
                except OSError:
                    pass
                n += 1

    def fill(self, total_bytes: int, mb_per_s: float = 150.0, size: int = 60000) -> int:
        """Send ``total_bytes`` of large datagrams (from the calling thread) at a pace
        tcpdump keeps up with; bytes sent."""
        sock, data, sent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), b"f" * size, 0
        began = time.monotonic()
        try:
            while sent < total_bytes:
                ahead = sent / (mb_per_s * 1e6) - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
                try:
                    sock.sendto(data, ("127.0.0.1", self.port))
                    sent += size
                except OSError:
                    time.sleep(0.001)
        finally:
            sock.close()
        return sent

    def sent_between(self, first: float, last: float) -> int:
        return sum(1 for t in list(self.sent) if first < t <= last)

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(5)
        self._sock.close()
        self.sink.close()


def pidfd_wait(pid: int, timeout: float) -> Optional[float]:
    """Epoch time at which process ``pid`` (a child, not yet reaped) was seen to exit, or
    None. Uses a pidfd, so no polling delay is added to the measurement."""
    fd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return time.time() if poller.poll(int(timeout * 1000)) else None
    finally:
        os.close(fd)


# ------------------------------------------------------------------ reading data back


def trace_lines(path: Path) -> Iterable[Tuple[float, str]]:
    """(timestamp, line) of each event line of a text trace."""
    with open(path, errors="replace") as f:
        for line in f:
            ts = tracefs.line_time(line)
            if ts is not None:
                yield ts, line


def events_after_line(path: Path, needle: str) -> Dict[str, Any]:
    """Events in a text trace after the printk:console record containing ``needle``:
    by timestamp and by position. ``found`` False if that record is not there."""
    rows = list(trace_lines(path))
    idx = next((i for i, (_, ln) in enumerate(rows) if needle in ln and "console:" in ln), None)
    if idx is None:
        return {"found": False, "events": len(rows), "after_by_time": None, "after_in_file": None,
                "trigger_ts": None, "last_ts": rows[-1][0] if rows else None}
    ts = rows[idx][0]
    return {"found": True, "events": len(rows), "trigger_ts": ts, "last_ts": rows[-1][0],
            "after_by_time": sum(1 for t, _ in rows if t > ts),
            "after_in_file": len(rows) - idx - 1}


def pcap_times(paths: Iterable[Path], max_len: Optional[int] = None) -> List[float]:
    """Timestamps of the packets in pcap files (only those of at most ``max_len`` bytes)."""
    out: List[float] = []
    for p in paths:
        try:
            out += [r.time for r in PcapReader(p) if max_len is None or r.origlen <= max_len]
        except (OSError, ValueError):
            continue
    return out


# ------------------------------------------------------------------ numbers and tables


def median(xs: Iterable[Optional[float]]) -> Optional[float]:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _numeric(cell: str) -> bool:
    try:
        float(cell.replace("x", "", 1) if cell.startswith("x") else cell)
        return True
    except ValueError:
        return cell in ("-", "")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table: numeric columns right-aligned, text columns left-aligned."""
    cells = [list(headers)] + [[fmt(x) for x in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    left = [i == 0 or not all(_numeric(r[i]) for r in cells[1:]) for i in range(len(headers))]
    lines = ["  ".join(x.ljust(w) if lj else x.rjust(w) for x, w, lj in zip(r, widths, left)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(name: str, data: Dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    data = {"bench": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": os.uname().nodename, "kernel": os.uname().release, "cpus": os.cpu_count(),
            "python": sys.version.split()[0], **data}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"results: {path}")
    return path


def run(main: Callable[[], None]) -> None:
    """A benchmark's entry point: Ctrl-C (or SIGTERM/SIGHUP, see Scratch) ends it quietly,
    after Scratch has removed everything it started."""
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted; everything the benchmark started was removed")


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("run as root (tracefs, /dev/kmsg and tcpdump need it)")


# ------------------------------------------------------------------ load generator process


def loadgen(seconds: float, getppid_rate: float, udp_rate: float, port: int) -> Dict[str, Any]:
    """getppid() calls (one syscalls:sys_enter_getppid event each when enabled) and UDP
    packets to 127.0.0.1:port, both paced in 10 ms batches, for ``seconds``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload, dest = b"h" * 100, ("127.0.0.1", port)
    began, calls, packets = time.monotonic(), 0, 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.01):
        elapsed = time.monotonic() - began
        if elapsed >= seconds:
            break
        while calls < int(elapsed * getppid_rate):
            os.getppid()
            calls += 1
        while packets < int(elapsed * udp_rate):
            try:
                sock.sendto(payload, dest)
            except OSError:
                pass
            packets += 1
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": time.monotonic() - began, "getppid_calls": calls, "udp_packets": packets,
            "cpu_s": ru.ru_utime + ru.ru_stime, "sys_s": ru.ru_stime}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mode", choices=["loadgen"])
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--getppid-rate", type=float, default=1000)
    ap.add_argument("--udp-rate", type=float, default=100)
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    print(json.dumps(loadgen(a.seconds, a.getppid_rate, a.udp_rate, a.port)), flush=True)
