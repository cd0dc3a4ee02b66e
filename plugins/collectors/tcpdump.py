"""The ``tcpdump`` collector: a bounded ring of pcap files of the scoutfs server's traffic."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import shlex
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from scoutfs_collect import ChildProcess, Collector, Problem, fsync_path, hookimpl, option, run_command
from scoutfs_collect.system import netif, selinux
from scoutfs_collect.system.pcap import summarize

PCAP_NAME = "tcpdump.pcap"  # ring files are tcpdump.pcap0 .. tcpdump.pcap{N-1}
CMD_NAME = "tcpdump.cmd"
STDERR_NAME = "tcpdump.stderr"
START_TIMEOUT = 10.0  # seconds to wait for "listening on"
STOP_GRACE = 3.0  # seconds after SIGINT before SIGTERM, then SIGKILL
DRAIN_TIMEOUT = 0.2  # at most this long at stop for tcpdump to read what the kernel queued
HEARTBEAT_PACKETS = 10
INSTALL_FIX = "dnf install tcpdump (RHEL/Rocky) or apt-get install tcpdump (Debian/Ubuntu)"
# Linux interface names: at most 15 bytes, no '/', ':' or white space; we also refuse
# shell and filter punctuation and a leading '-' so a name can never read as an option.
_IFACE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,14}")
_STATS_RE = re.compile(
    r"^(\d+) packets? (captured|received by filter|dropped by kernel|dropped by interface)"
)
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])

def parse_stats(text: str) -> Dict[str, int]:
    """tcpdump's closing counts: ``{"captured": N, "received_by_filter": N, ...}``."""
    out = {}
    for line in text.splitlines():
        m = _STATS_RE.match(line.strip())
        if m:
            out[m.group(2).replace(" ", "_")] = int(m.group(1))
    return out


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def _status(code: Optional[int]) -> str:
    if code is not None and code < 0:
        try:
            return f"{code} (killed by {signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


def _wait_drained(pid: int, timeout: float) -> None:
    """Wait (bounded) until tcpdump sleeps in poll(): it then has read every packet queued.

    tcpdump ends its loop on SIGINT without reading what is still in the kernel ring
    (seen here: 5 of 50 packets sent just before SIGINT). Sleeping in poll() means the
    ring held nothing for it; this takes well under a millisecond when it is idle.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            wchan = Path(f"/proc/{pid}/wchan").read_text().strip()
        except (OSError, IndexError):
            return
        if state == "S" and ("poll" in wchan or wchan in ("", "0")):
            return
        time.sleep(0.001)  # no event says "the ring is empty"; 0 or 1 looks measured here



class Tcpdump(Collector):
    """Records the scoutfs network traffic of the target IP:PORT into a ring of pcap files.

    Runs ``tcpdump -p -i INTERFACE --immediate-mode -U -w tcpdump.pcap -C file_size_mb
    -W file_count -Z root`` with the filter ``host IP and (tcp port PORT or udp port
    PORT)`` (plus ``and (extra_filter)``). The ring keeps the newest file_count files
    (tcpdump.pcap0..N-1, reused in rotation); the manifest lists them oldest first
    (details.files_in_order), with tcpdump's packet and drop counts and the time span
    the packets cover. Open them with wireshark or ``tcpdump -r``.

    Preflight compiles the filter (``tcpdump -d``, captures nothing) and, unless
    heartbeat_timeout is 0, waits for 10 UDP packets of IP:PORT (the scoutfs
    heartbeat), like the old tracing script: a wrong address is caught before the run.

    Changes on the system: nothing lasting. The interface is not put in promiscuous
    mode (-p); while it runs, tcpdump holds a packet socket with an in-kernel filter
    (other traffic is never copied to user space) and a kernel capture buffer of
    buffer_mb MiB (-B; tcpdump's 2 MiB default drops bursts of large packets).
    Overhead: one copy per matching packet, handed over at once (--immediate-mode)
    and written to the file at once (-U: nothing waits in a stdio buffer, so a killed
    runner loses nothing). At stop it waits (at most 0.2 s) until tcpdump has read every
    queued packet, then sends SIGINT and returns: every packet read so far is in the
    file, and tcpdump ends its loop within ~1 ms. Finalize waits for it to exit (~20 ms
    more) and records its exit status and packet counts.
    Disk: at most file_size_mb x file_count MB.
    Requirements: tcpdump (dnf install tcpdump / apt-get install tcpdump), root (or
    CAP_NET_RAW). Where AppArmor confines tcpdump, the file names (*.pcap0..) are ones
    its profile allows. Where SELinux moves tcpdump into netutils_t (not from a root shell
    or the unit: README "SELinux"), preflight names the output dir it may not write and the
    semanage/restorecon commands that label it.
    """

    type_name = "tcpdump"

    @dataclasses.dataclass
    class Options:
        interface: str = option("any", "Interface to capture on (tcpdump -i); 'any' means all.")
        file_size_mb: int = option(50, "Size of one ring file in millions of bytes (tcpdump -C).")
        file_count: int = option(2, "Number of files in the ring (tcpdump -W).")
        snaplen: int = option(0, "Bytes kept of each packet (tcpdump -s); 0 = tcpdump's default.")
        buffer_mb: int = option(
            16, "Kernel capture buffer in MiB (tcpdump -B); 0 = tcpdump's default (2 MiB)."
        )
        extra_filter: str = option("", "Extra pcap-filter expression, added as 'and (EXTRA)'.")
        heartbeat_timeout: float = option(
            5.0, "Seconds preflight waits for 10 UDP heartbeats of IP:PORT; 0 skips the check."
        )

    def __init__(self, ctx: Any, options: Any) -> None:
        super().__init__(ctx, options)
        self._child: Optional[ChildProcess] = None
        self._lock = threading.Lock()
        self._capturing = False
        self._exit_code: Optional[int] = None
        self._stopped = False
        self._argv: List[str] = []

    @property
    def target_ip(self) -> str:
        return str(ipaddress.ip_address(self.ctx.target.ip.split("%", 1)[0]))

    def capture_filter(self) -> str:
        ip, port = self.target_ip, int(self.ctx.target.port)
        expr = f"host {ip} and (tcp port {port} or udp port {port})"
        if self.options.extra_filter.strip():
            expr += f" and ({self.options.extra_filter.strip()})"
        return expr

    def argv(self, tcpdump: str = "tcpdump") -> List[str]:
        o = self.options
        out = [tcpdump, "-p", "-i", o.interface, "--immediate-mode", "-U"]
        if o.snaplen > 0:
            out += ["-s", str(o.snaplen)]
        if o.buffer_mb > 0:
            out += ["-B", str(o.buffer_mb * 1024)]
        out += ["-w", str(self.ctx.workdir / PCAP_NAME), "-C", str(o.file_size_mb)]
        out += ["-W", str(o.file_count), "-Z", "root", self.capture_filter()]
        return out

    @property
    def pid(self) -> Optional[int]:
        """Process id of the running tcpdump (None before start)."""
        return self._child.pid if self._child is not None else None

    def disk_estimate(self) -> int:
        return int(self.options.file_size_mb * 1e6 * self.options.file_count)

    def ring_files(self) -> List[Path]:
        """The ring's pcap files that exist now (in name order)."""
        try:
            names = os.listdir(self.ctx.workdir)
        except OSError:
            return []
        return sorted(
            self.ctx.workdir / n
            for n in names
            if n.startswith(PCAP_NAME) and n[len(PCAP_NAME):].isdigit()
        )

    def bytes_written(self) -> int:
        return sum(p.stat().st_size for p in self.ring_files() if p.exists())

    def streams(self) -> List[Path]:
        """The pcap ring (tcpdump writes each packet through at once, -U)."""
        return self.ring_files()

    def preflight(self) -> List[Problem]:
        problems = self._option_problems()
        tcpdump = shutil.which("tcpdump", path=_SEARCH_PATH)
        if tcpdump is None:
            problems.append(Problem("tcpdump is not installed", INSTALL_FIX))
        if problems:
            return problems
        assert tcpdump is not None
        found = [p for p in [self._selinux_problem(tcpdump)] if p]
        problem = self._interface_problem() or self._filter_problem(tcpdump)
        if problem is None and self.options.heartbeat_timeout > 0:
            problem = self._heartbeat_problem(tcpdump)  # read-only: runs under dry_run too
        return found + ([problem] if problem else [])

    def _selinux_problem(self, tcpdump: str) -> Optional[Problem]:
        """Where SELinux moves tcpdump into netutils_t, the output dir must have a type that
        domain may create files in (see :mod:`scoutfs_collect.system.selinux`)."""
        out = self.ctx.output_dir
        if out is None or not out.is_dir():
            return None  # a missing output dir is the core's problem to report
        denial = selinux.tcpdump_write_denial(selinux.read_labels(out, tcpdump), out)
        return Problem(denial.message, denial.fix, fatal=denial.enforcing) if denial else None

    def _option_problems(self) -> List[Problem]:
        o, out = self.options, []
        fix = "correct the setting in the profile"
        limits = (("file_size_mb", o.file_size_mb, 1), ("file_count", o.file_count, 1),
                  ("snaplen", o.snaplen, 0), ("buffer_mb", o.buffer_mb, 0),
                  ("heartbeat_timeout", o.heartbeat_timeout, 0))
        for name, value, low in limits:
            if value < low:
                out.append(Problem(f"option {name} must be at least {low}, not {value}", fix))
        if not _IFACE_RE.fullmatch(o.interface):
            out.append(Problem(
                f"interface {o.interface!r} is not a valid interface name "
                "(at most 15 letters, digits, '_', '.', '-', '@', '+')",
                "set interface to a name listed by 'ip link', or 'any'",
            ))
        depth = 0
        for ch in o.extra_filter:
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth < 0:
                break
        if depth != 0:
            out.append(Problem(
                f"extra_filter {o.extra_filter!r} has unbalanced parentheses",
                "correct extra_filter in the profile (pcap-filter syntax, see man pcap-filter)",
            ))
        try:
            port_ok = bool(self.target_ip) and 0 < int(self.ctx.target.port) < 65536
        except ValueError:
            port_ok = False
        if not port_ok:
            out.append(Problem(f"target {self.ctx.target} is not an IPv4/IPv6 address and port",
                               "pass the server's IP and PORT as printed in 'server starting at'"))
        return out

    def _interface_problem(self) -> Optional[Problem]:
        name = self.options.interface
        if name == "any" or netif.exists(name):  # in this namespace: not /sys/class/net's
            return None
        return Problem(f"interface {name!r} does not exist on this host",
                       "set interface to a name listed by 'ip link', or 'any'")

    def _filter_problem(self, tcpdump: str) -> Optional[Problem]:
        expr = self.capture_filter()
        try:
            done = run_command([tcpdump, "-d", "-i", self.options.interface, expr], timeout=15)
        except Exception as exc:
            return Problem(f"cannot run {tcpdump} -d to check the filter: {exc}", INSTALL_FIX)
        if done.returncode == 0:
            return None
        return Problem(
            f"tcpdump refuses the capture filter {expr!r} on interface "
            f"{self.options.interface}: {_last_line(done.stderr)}",
            "correct extra_filter (pcap-filter syntax, see man pcap-filter) or interface "
            "in the profile",
        )

    def _heartbeat_problem(self, tcpdump: str) -> Optional[Problem]:
        timeout = float(self.options.heartbeat_timeout)
        target = self.ctx.target
        expr = f"host {self.target_ip} and udp port {int(target.port)}"
        argv = [tcpdump, "-p", "-i", self.options.interface, "--immediate-mode", "-n", "-q",
                "-c", str(HEARTBEAT_PACKETS), expr]
        with tempfile.TemporaryDirectory(prefix="scoutfs-collect-heartbeat.") as tmp:
            err = Path(tmp) / "stderr"
            child = ChildProcess(argv, stderr=err)
            try:
                child.start()
            except OSError as exc:
                return Problem(f"cannot run {tcpdump}: {exc}", INSTALL_FIX)
            code = child.wait(timeout)
            if code is None:
                child.stop(grace=1.0)
                return Problem(
                    f"no heartbeat on {target}: fewer than {HEARTBEAT_PACKETS} UDP packets of "
                    f"{target} on interface {self.options.interface} in {timeout:g} s",
                    "use the address the scoutfs server logs as 'server starting at IP:PORT' "
                    "(dmesg | grep 'server starting at'), or set heartbeat_timeout: 0 to skip "
                    "this check",
                )
            if code != 0:
                return Problem(f"heartbeat check: tcpdump exited with status {_status(code)}: "
                               f"{_last_line(err.read_text(errors='replace'))}",
                               "run as root; or set heartbeat_timeout: 0 to skip this check")
        return None

    def start(self) -> None:
        tcpdump = shutil.which("tcpdump", path=_SEARCH_PATH) or "tcpdump"
        self._argv = self.argv(tcpdump)
        (self.ctx.workdir / CMD_NAME).write_text(shlex.join(self._argv) + "\n")
        stderr = self.ctx.workdir / STDERR_NAME
        self._child = ChildProcess(self._argv, stderr=stderr, cwd=self.ctx.workdir,
                                   on_unexpected_exit=self._exited)
        self._child.start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = self._stderr_text()
            if "listening on" in text:
                with self._lock:
                    if self._exit_code is None:
                        self._capturing = True
                        self.ctx.details["started"] = time.time()
                        return
            code = self._child.returncode
            if code is not None:
                raise RuntimeError(f"tcpdump exited at start with status {_status(code)}: "
                                   f"{_last_line(self._stderr_text())}")
            if time.monotonic() > deadline:
                self._child.stop(grace=1.0)
                raise RuntimeError(f"tcpdump did not start capturing within {START_TIMEOUT:g} s: "
                                   f"{_last_line(self._stderr_text())}")
            # tcpdump says it listens only on stderr, a file kept for the archive; it takes
            # ~20 ms, not on the trigger path. Polling the file, bounded by the deadline.
            time.sleep(0.005)

    def _exited(self, code: int) -> None:
        with self._lock:
            self._exit_code = code
            report = self._capturing
        if report:
            self.ctx.fail(f"tcpdump exited unexpectedly with status {_status(code)}: "
                          f"{_last_line(self._stderr_text())}")

    def _stderr_text(self) -> str:
        try:
            return (self.ctx.workdir / STDERR_NAME).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """The trigger instant: let tcpdump read what the kernel queued, then SIGINT.

        Every packet it has read is in the file already (-U), so nothing else waits
        here: tcpdump's counts and exit are collected by finalize.
        """
        child = self._child
        if child is None or self._stopped:
            return
        self._stopped = True
        began = time.monotonic()
        if child.pid is not None and child.returncode is None:
            _wait_drained(child.pid, DRAIN_TIMEOUT)
        child.send_signal(signal.SIGINT)
        self.ctx.details["stop_seconds"] = round(time.monotonic() - began, 4)
        # The runner fsyncs the ring right after every collector has stopped.

    def _reap(self) -> None:
        """Wait for tcpdump to exit (escalating after STOP_GRACE) and record its status."""
        child = self._child
        if child is None or child.popen is None:
            return
        code = child.wait(STOP_GRACE)  # an event wait: wakes at once on exit
        if code is None:
            code = child.stop(signal.SIGTERM, grace=2.0)
        self.ctx.details["exit_status"] = code

    def cleanup(self) -> None:
        """Never leave tcpdump running: stop it if it still is."""
        if self._child is not None and self._child.returncode is None:
            self.stop()
            self._reap()

    def finalize(self) -> None:
        self.stop()  # no-op when the runner already stopped it
        self._reap()  # never leave tcpdump running
        for path in self.ring_files():
            fsync_path(path)
        details = self.ctx.details
        if self._argv:
            details["command"], details["filter"] = self._argv, self._argv[-1]
        details.update({f"packets_{k}": v for k, v in parse_stats(self._stderr_text()).items()})
        summaries = [summarize(p) for p in self.ring_files()]
        summaries.sort(key=lambda s: (s.mtime_ns, s.first if s.first is not None else 0.0, s.name))
        details["files_in_order"] = [s.name for s in summaries]
        details["files"] = [dataclasses.asdict(s) for s in summaries]
        details["packets_in_files"] = sum(s.packets for s in summaries)
        firsts = [s.first for s in summaries if s.first is not None]
        lasts = [s.last for s in summaries if s.last is not None]
        if firsts:
            self.ctx.set_window(min(firsts), max(lasts))


@hookimpl
def scoutfs_collect_register(register: Any) -> None:
    register.add_collector(Tcpdump)
