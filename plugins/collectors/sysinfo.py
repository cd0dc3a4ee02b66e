"""Collector ``sysinfo``: a snapshot of the host (CPU, memory, disks, network, processes) at
start and at stop."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import psutil

from scoutfs_collect import Collector, TimedCall, call_with_timeout, hookimpl, human_bytes, option

COPIED = {"/proc/cmdline": "proc-cmdline.txt", "/proc/meminfo": "proc-meminfo.txt",
          "/proc/mounts": "proc-mounts.txt", "/etc/os-release": "os-release.txt"}
PROC_ATTRS = ["pid", "ppid", "name", "username", "status", "cpu_times", "memory_info",
              "num_threads", "create_time", "cmdline"]
Section = Callable[[], Any]


def run_bounded(sections: List[Tuple[str, Section]], budget: float) -> Dict[str, Any]:
    """Run each section in order in a thread of its own; after ``budget`` seconds give up.

    A hung filesystem can block statfs() or a read of /proc/PID/cmdline forever; the
    sections not finished in time are marked, the snapshot is written anyway.
    """
    result: Dict[str, Any] = {}

    def work() -> None:
        for name, fn in sections:
            try:
                result[name] = fn()
            except Exception as exc:  # one section failing must not lose the others
                result[name] = {"error": f"{type(exc).__name__}: {exc}"}

    call_with_timeout(work, budget, "sysinfo")
    out = dict(result)
    for name, _ in sections:
        out.setdefault(name, {"error": f"not finished after {budget:g} s (hung filesystem?)"})
    return out


def _addr(a: Any) -> str:
    if not a:
        return ""
    return f"[{a.ip}]:{a.port}" if ":" in a.ip else f"{a.ip}:{a.port}"


def _uname() -> Dict[str, str]:
    u = os.uname()
    return {"sysname": u.sysname, "nodename": u.nodename, "release": u.release,
            "version": u.version, "machine": u.machine}


SCOUTFS = "scoutfs"
# kmod/src/super.c scoutfs_statfs asks the server and waits in wait_for_completion: on a
# node whose server does not answer (the one being fenced) the thread sleeps uninterruptibly
# and the whole process cannot exit until the server answers (seen in a guest).
SCOUTFS_STATFS = ("not read: statfs of a scoutfs mount asks its server and cannot be interrupted "
                  "while the server does not answer (the scoutfs-counters collector has its use)")


def _kib(n: int) -> int:
    return n // 1024


@dataclasses.dataclass
class Snapshotter:
    """Takes the snapshots; keeps what ``stop`` needs from ``start`` (CPU deltas)."""

    port: int
    top: int
    budget: float
    prev_cpu: Optional[List[Any]] = None
    prev_time: Optional[float] = None
    prev_proc_cpu: Dict[Tuple[int, float], float] = dataclasses.field(default_factory=dict)

    def take(self, label: str) -> Dict[str, Any]:
        now = time.time()
        t0 = time.monotonic()
        sections: List[Tuple[str, Section]] = [
            ("host", self.host), ("cpu", self.cpu), ("memory", self.memory),
            ("network", self.network), ("connections", self.connections),
            ("modules", self.modules), ("processes", lambda: self.processes(now)),
            ("disks", self.disks),
        ]
        snap: Dict[str, Any] = {"label": label, "taken_at": now,
                                "taken_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
        snap.update(run_bounded(sections, self.budget))
        snap["took_ms"] = round((time.monotonic() - t0) * 1000, 1)
        self.prev_time = now
        return snap

    def host(self) -> Dict[str, Any]:
        boot = psutil.boot_time()
        return {"hostname": socket.gethostname(), "uname": _uname(),
                "boot_time": boot, "uptime_s": round(time.time() - boot, 1),
                "load": list(os.getloadavg())}

    def cpu(self) -> Dict[str, Any]:
        per_cpu = psutil.cpu_times(percpu=True)
        busy = None
        if self.prev_cpu is not None:  # % busy per CPU since the start snapshot
            busy = []
            for old, new in zip(self.prev_cpu, per_cpu):
                total = sum(new) - sum(old)
                idle = (new.idle + getattr(new, "iowait", 0)) - (old.idle + getattr(old, "iowait", 0))
                busy.append(round(100 * (1 - idle / total), 1) if total > 0 else 0.0)
        self.prev_cpu = per_cpu
        return {"logical": psutil.cpu_count(), "physical": psutil.cpu_count(logical=False),
                "times": psutil.cpu_times()._asdict(), "busy_pct_since_start": busy}

    def memory(self) -> Dict[str, Any]:
        return {"virtual": psutil.virtual_memory()._asdict(), "swap": psutil.swap_memory()._asdict()}

    def network(self) -> Dict[str, Any]:
        stats = psutil.net_if_stats()
        io = psutil.net_io_counters(pernic=True)
        out = {}
        for name, addrs in psutil.net_if_addrs().items():
            st = stats.get(name)
            out[name] = {
                "addrs": [a.address for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)],
                "up": st.isup if st else None, "mtu": st.mtu if st else None,
                "speed_mbps": st.speed if st else None,
                "io": io[name]._asdict() if name in io else None,
            }
        return out

    def connections(self) -> Dict[str, Any]:
        rows = []
        for c in psutil.net_connections(kind="inet"):
            ports = {a.port for a in (c.laddr, c.raddr) if a}
            if self.port not in ports:
                continue
            try:
                proc = psutil.Process(c.pid).name() if c.pid else ""
            except psutil.Error:
                proc = ""
            rows.append({"proto": "tcp" if c.type == socket.SOCK_STREAM else "udp",
                         "laddr": _addr(c.laddr), "raddr": _addr(c.raddr),
                         "status": c.status, "pid": c.pid, "process": proc})
        return {"port": self.port, "list": rows}

    def modules(self) -> Dict[str, Any]:
        mods: List[Dict[str, Any]] = []
        path = Path("/proc/modules")
        if not path.exists():
            return {"loaded": mods, "scoutfs": None, "note": "no /proc/modules: kernel built "
                    "without loadable module support"}
        for line in path.read_text().splitlines():
            f = line.split()
            if len(f) >= 5:
                mods.append({"name": f[0], "size": int(f[1]), "refcount": f[2],
                             "used_by": f[3].strip(",-").split(",") if f[3] != "-" else [],
                             "state": f[4]})
        scoutfs = {}
        for key in ("version", "srcversion"):
            p = Path("/sys/module/scoutfs") / key
            if p.exists():
                scoutfs[key] = p.read_text().strip()
        return {"loaded": mods, "scoutfs": scoutfs or None}

    def processes(self, now: float) -> Dict[str, Any]:
        rows = []
        elapsed = now - self.prev_time if self.prev_time else None
        seen: Dict[Tuple[int, float], float] = {}
        for p in psutil.process_iter(PROC_ATTRS):
            i = p.info
            times, mem = i.get("cpu_times"), i.get("memory_info")
            cpu_s = round(times.user + times.system, 2) if times else 0.0
            created = i.get("create_time") or now
            key = (i["pid"], created)
            seen[key] = cpu_s
            if elapsed and key in self.prev_proc_cpu:  # %CPU over the run
                pct = (cpu_s - self.prev_proc_cpu[key]) / elapsed * 100
            else:  # %CPU over the process's lifetime (or since the start snapshot)
                pct = cpu_s / max(now - max(created, self.prev_time or 0), 0.01) * 100
            rows.append({"pid": i["pid"], "ppid": i.get("ppid"), "user": i.get("username"),
                         "state": i.get("status"), "cpu_s": cpu_s, "cpu_pct": round(pct, 1),
                         "rss_kb": _kib(mem.rss) if mem else 0, "threads": i.get("num_threads"),
                         "name": i.get("name"), "cmd": redact(i.get("cmdline") or [])[:200]})
        self.prev_proc_cpu = seen
        return {"count": len(rows),
                "cpu_pct_over": "the run (since start)" if elapsed else "each process's lifetime",
                "top_cpu": sorted(rows, key=lambda r: -r["cpu_pct"])[: self.top],
                "top_rss": sorted(rows, key=lambda r: -r["rss_kb"])[: self.top],
                "all": sorted(rows, key=lambda r: r["pid"])}

    def disks(self) -> Dict[str, Any]:
        parts = [p._asdict() for p in psutil.disk_partitions(all=False)]
        for p in parts:
            if p["fstype"] == SCOUTFS:
                p["usage"] = {"error": SCOUTFS_STATFS}
        calls = [(p, TimedCall(lambda m=p["mountpoint"]: psutil.disk_usage(m)._asdict(), "statfs"))
                 for p in parts if "usage" not in p]  # all at once: one hung mount must not delay the others
        for p, call in calls:
            outcome = call.result(2.0)
            p["usage"] = (outcome.value if outcome.ok else
                          {"error": "statfs did not return in 2 s" if outcome.timed_out else outcome.error})
        io = psutil.disk_io_counters(perdisk=True) or {}
        return {"partitions": parts, "io": {k: v._asdict() for k, v in io.items()}}


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _proc_table(rows: List[Dict[str, Any]]) -> List[str]:
    out = [f"  {'PID':>7} {'PPID':>7} {'USER':<10} {'STATE':<9} {'CPU_S':>9} {'%CPU':>6} "
           f"{'RSS_KB':>9} {'THR':>4} CMD"]
    for r in rows:
        out.append(f"  {r['pid']:>7} {r['ppid'] or 0:>7} {str(r['user'])[:10]:<10} "
                   f"{str(r['state'])[:9]:<9} {r['cpu_s']:>9.2f} {r['cpu_pct']:>6.1f} "
                   f"{r['rss_kb']:>9} {r['threads'] or 0:>4} {r['cmd'] or '[' + str(r['name']) + ']'}")
    return out


def render(s: Dict[str, Any]) -> str:
    """The snapshot as plain text, for a human reading the archive."""
    lines = [f"sysinfo '{s['label']}' snapshot taken {s['taken_at_utc']} (took {s['took_ms']} ms)"]
    if "stop_requested_at" in s:
        lines.append(f"(the run stopped at {_utc(s['stop_requested_at'])}; "
                     "taken when finalizing, after the recorders were frozen)")

    def section(name: str, body: Callable[[Any], List[str]]) -> None:
        data = s.get(name)
        lines.append("")
        if isinstance(data, dict) and set(data) == {"error"}:
            lines.append(f"{name}: ERROR {data['error']}")
        else:
            lines.extend(body(data))

    section("host", lambda h: [
        f"host {h['hostname']}: {h['uname']['sysname']} {h['uname']['release']} "
        f"{h['uname']['version']} {h['uname']['machine']}",
        f"booted {_utc(h['boot_time'])}, up {h['uptime_s'] / 86400:.2f} days; "
        f"load {' '.join(f'{x:.2f}' for x in h['load'])}"])
    section("cpu", lambda c: [f"cpu: {c['logical']} logical, {c['physical']} physical"] + (
        [f"busy since start: {' '.join(f'{b}%' for b in c['busy_pct_since_start'])}"]
        if c["busy_pct_since_start"] is not None else []))
    section("memory", lambda m: [
        f"memory: total {human_bytes(m['virtual']['total'])}, available "
        f"{human_bytes(m['virtual']['available'])} ({m['virtual']['percent']}% used); swap "
        f"{human_bytes(m['swap']['used'])} used of {human_bytes(m['swap']['total'])}"])
    section("disks", lambda d: ["disks:"] + [
        f"  {p['device']} {p['mountpoint']} {p['fstype']} " + (
            f"{human_bytes(p['usage']['used'])} used of {human_bytes(p['usage']['total'])} "
            f"({p['usage']['percent']}%)" if "total" in p["usage"] else p["usage"]["error"])
        for p in d["partitions"]])
    section("network", lambda n: ["network:"] + [
        f"  {name} {'up' if i['up'] else 'down'} mtu {i['mtu']} {' '.join(i['addrs'])}"
        + (f" rx {human_bytes(i['io']['bytes_recv'])} tx {human_bytes(i['io']['bytes_sent'])} "
           f"errs {i['io']['errin']}/{i['io']['errout']} drops {i['io']['dropin']}/"
           f"{i['io']['dropout']}" if i["io"] else "")
        for name, i in sorted(n.items())])
    section("connections", lambda c: [f"connections on port {c['port']}: {len(c['list'])}"] + [
        f"  {r['proto']} {r['laddr']} -> {r['raddr'] or '*'} {r['status']} pid {r['pid']} "
        f"{r['process']}" for r in c["list"]])
    section("modules", lambda m: [
        m.get("note") or f"modules: {len(m['loaded'])} loaded; scoutfs: "
        + (" ".join(f"{k} {v}" for k, v in m["scoutfs"].items()) if m["scoutfs"] else "not loaded"),
        "  " + " ".join(x["name"] for x in m["loaded"])])
    section("processes", lambda p: (
        [f"processes: {p['count']}; top by %CPU over {p['cpu_pct_over']}:"]
        + _proc_table(p["top_cpu"]) + ["", "top by resident memory:"]
        + _proc_table(p["top_rss"]) + ["", "all processes:"] + _proc_table(p["all"])))
    return "\n".join(lines) + "\n"


_SECRET_WORD = r"(?:pass(?:word|wd|phrase)?|secret|token|api[-_]?key|credentials?)"
_SECRET_ASSIGN = re.compile(r"(?i)(\b[\w.-]*" + _SECRET_WORD + r"[\w.-]*=)\S+")
_SECRET_FLAG = re.compile(r"(?i)^--?[\w-]*" + _SECRET_WORD + r"[\w-]*$")


def redact(argv: List[str]) -> str:
    """A command line with the values of password/secret/token/key arguments replaced by
    '***' (``--password X``, ``--token=X``, ``PASSWORD=X``): support gets the shape of
    what runs, not the credentials on it."""
    out: List[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        if _SECRET_FLAG.match(arg):
            hide_next = True
            out.append(arg)
            continue
        out.append(_SECRET_ASSIGN.sub(r"\1***", arg))
    return " ".join(out)


class Sysinfo(Collector):
    """Snapshots of the host at start and at stop: kernel and uptime, load, CPU,
    memory, disks and mounts, network interfaces, the connections to the target
    port, loaded kernel modules (the scoutfs version) and processes (top by CPU and
    memory, plus a compact full list). Output: sysinfo-start.txt/.json,
    sysinfo-stop.txt/.json, and copies of /proc/cmdline, /proc/meminfo,
    /proc/mounts and /etc/os-release taken at start.

    Process command lines are kept (first 200 characters) with the values of
    password, secret, token and key arguments replaced by ``***``.

    The stop snapshot is taken at the beginning of finalize, not in stop, so it
    never delays the freeze of the other recorders; it is labeled with the time it
    was actually taken and the time the run stopped. A snapshot gives up on parts
    that hang (a stuck filesystem) after `budget` seconds and notes it. scoutfs mounts
    get no statfs (disk usage): it asks the server and, when the server does not answer
    (on the node being fenced), cannot be interrupted: the run could not exit.

    Changes on the system: nothing (reads /proc and /sys).
    Overhead: one snapshot costs tens of milliseconds of CPU, twice per run.
    Requirements: root to see every process's connections.
    """

    type_name = "sysinfo"

    @dataclasses.dataclass
    class Options:
        top: int = option(15, "Processes listed in the top-by-CPU and top-by-memory tables.")
        budget: float = option(10.0, "Seconds a snapshot may take before hung parts are skipped.")

    def disk_estimate(self) -> int:
        return 4 * 1024 * 1024

    def start(self) -> None:
        self.workdir = Path(self.ctx.workdir)
        self.stop_requested: Optional[float] = None
        self.snapshotter = Snapshotter(self.ctx.target.port, self.options.top, self.options.budget)
        copied = []
        for src, name in COPIED.items():
            try:
                (self.workdir / name).write_bytes(Path(src).read_bytes())
                copied.append(src)
            except OSError as exc:
                self.log.debug("sysinfo: %s not copied: %s", src, exc)
        self.ctx.details["copied"] = copied
        self._write(self.snapshotter.take("start"))

    def stop(self) -> None:
        self.stop_requested = time.time()  # only the time: the snapshot waits for finalize

    def finalize(self) -> None:
        snap = self.snapshotter.take("stop")
        if self.stop_requested is not None:
            snap["stop_requested_at"] = self.stop_requested
        self._write(snap)
        self.ctx.details["stop_snapshot_delay_s"] = (
            round(snap["taken_at"] - self.stop_requested, 3) if self.stop_requested else None)

    def _write(self, snap: Dict[str, Any]) -> None:
        label = snap["label"]
        (self.workdir / f"sysinfo-{label}.json").write_text(json.dumps(snap, indent=1, default=str))
        (self.workdir / f"sysinfo-{label}.txt").write_text(render(snap))
        self.ctx.details[f"{label}_took_ms"] = snap["took_ms"]
        errors = [k for k, v in snap.items() if isinstance(v, dict) and set(v) == {"error"}]
        if errors:
            self.ctx.details[f"{label}_errors"] = {k: snap[k]["error"] for k in errors}


@hookimpl
def scoutfs_collect_register(register):
    register.add_collector(Sysinfo)
