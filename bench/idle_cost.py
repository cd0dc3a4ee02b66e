"""Benchmark: what an armed scoutfs-collect costs while it waits (CPU, wake-ups, disk writes).

The default profile (fixture scoutfs sysfs; ftrace on syscalls:sys_enter_getppid since
scoutfs:* does not exist here; tcpdump on lo; trigger patterns made unique to this run
so no other line on the host ends it) is armed, then a load generator (its own
process) runs for ``--seconds``: 1,000 getppid() calls/s (one real trace event each)
and 100 UDP packets/s to the run's port. Over that window:

* the runner's own CPU (all threads, psutil cpu_times user+system; children apart),
  per thread CPU and wake-ups (/proc/PID/task/TID; names and wait frames from
  ``py-spy dump`` if py-spy is installed), so a polling loop shows up;
* its children (tcpdump) CPU and bytes written, separately;
* bytes the runner writes (psutil io_counters: write_chars = write() calls,
  write_bytes = to storage) and growth of each collector's work dir; the ftrace
  collector's must be 0 in ring mode;
* the actual trace event rate (the instance's per-CPU stats, read only);
* baselines measured in the same run: the load generator alone (``--baseline-seconds``;
  its own CPU with and without the run armed shows the in-kernel cost of recording
  the events and capturing the packets, which the kernel charges to it), and the old
  script's waiting style (a ``dmesg --follow-new`` follower into a file and ``grep -Eq``
  on it every 0.5 s: its CPU, children included). Whole-system busy CPU is recorded
  too (``--show-system`` prints it); it is meaningless while anything else runs.

Run as root with the project's Python (tools/setup.sh makes .venv-3.11):
    .venv-3.11/bin/python bench/idle_cost.py [--seconds 60]
Prints tables, writes bench/results/idle_cost.json. Never fails on a number.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import common as c
import psutil

from scoutfs_collect.demo import fixture as scoutfs_fixture
from scoutfs_collect.plugin.api import directory_size
from scoutfs_collect.system import tracefs

TICK = os.sysconf("SC_CLK_TCK")
HERE = Path(__file__).resolve().parent


def system_busy() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def thread_stats(pid: int) -> Dict[int, Dict[str, float]]:
    """Per thread: CPU seconds (utime+stime) and voluntary/involuntary switches."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        sw = dict(re.findall(r"^(\w+_ctxt_switches):\s+(\d+)", status, re.M))
        out[int(tid)] = {"cpu": (int(stat[11]) + int(stat[12])) / TICK,
                         "voluntary": int(sw.get("voluntary_ctxt_switches", 0)),
                         "involuntary": int(sw.get("nonvoluntary_ctxt_switches", 0))}
    return out


def py_spy_threads(pid: int) -> Dict[int, Dict[str, str]]:
    """tid -> thread name and the innermost frame it is in, from ``py-spy dump``."""
    exe = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                       os.environ.get("PATH", "")]))
    if exe is None:
        return {}
    try:
        text = subprocess.run([exe, "dump", "--pid", str(pid)], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out: Dict[int, Dict[str, str]] = {}
    frames: Dict[int, List[str]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r'Thread (\d+) \((\w+)\): "(.*)"', line)
        if m:
            current = int(m.group(1))
            out[current], frames[current] = {"name": m.group(3), "frames": ""}, []
        elif current is not None and line.startswith("    "):
            frames[current].append(line.strip())
    for tid, stack in frames.items():  # the first frame that is not the stdlib's waiting
        own = [f for f in stack if not re.search(r"\((threading|subprocess|selectors|concurrent/)", f)]
        out[tid]["frames"] = " < ".join(re.sub(r"\(.*/", "(", f) for f in (own or stack)[:2])
    return out


class Snapshot:
    def __init__(self, runner: psutil.Process, workdir: Path, instance: str) -> None:
        self.time = time.monotonic()
        self.busy = system_busy()
        ct = runner.cpu_times()
        self.cpu = ct.user + ct.system
        io = runner.io_counters()
        self.write_bytes, self.write_chars = io.write_bytes, io.write_chars
        self.threads = thread_stats(runner.pid)
        self.children = {}
        for ch in runner.children(recursive=True):
            try:
                t, chio = ch.cpu_times(), ch.io_counters()
                self.children[ch.pid] = {"name": ch.name(), "cpu": t.user + t.system,
                                         "write_bytes": chio.write_bytes, "write_chars": chio.write_chars}
            except psutil.Error:
                continue
        self.dirs = {d.name: directory_size(d) for d in workdir.iterdir() if d.is_dir()}
        self.events = sum(st.entries + st.overrun for st in tracefs.TraceInstance(instance).cpu_stats())


def start_loadgen(scr: c.Scratch, seconds: float, port: int, args: argparse.Namespace, out: Path):
    f = open(out, "w")
    try:
        return scr.popen([sys.executable, HERE / "common.py", "loadgen", "--seconds", seconds,
                          "--getppid-rate", args.getppid_rate, "--udp-rate", args.udp_rate,
                          "--port", port], stdout=f)
    finally:
        f.close()


def measure_ours(scr: c.Scratch, sysfs: Path, port: int, args: argparse.Namespace) -> Dict[str, Any]:
    run_dir = scr.dir / "ours"
    (run_dir / "out").mkdir(parents=True)
    nonce, instance = f"bench{uuid.uuid4().hex[:10]}", scr.instance_name("idle")
    sets = {"collectors.scoutfs-counters.sysfs_root": sysfs, "triggers.fence-request.sysfs_root": sysfs,
            "collectors.ftrace.events": "[syscalls:sys_enter_getppid]",
            "collectors.ftrace.instance": instance, "collectors.ftrace.freeze_on": f"['*{nonce}*']",
            "collectors.tcpdump.interface": "lo", "collectors.tcpdump.heartbeat_timeout": 0,
            "triggers.fencing.pattern": nonce}
    argv = ["--profile", "default", "--output-dir", run_dir / "out", "--events-file", run_dir / "ev.jsonl"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    env = c.cli_env(run_dir)
    with open(run_dir / "stderr", "w") as err:
        proc = scr.popen(c.cli_argv(*argv, "127.0.0.1", port), death_signal=signal.SIGTERM, env=env,
                         stdout=subprocess.DEVNULL, stderr=err)
    workdir = Path(c.wait_event(run_dir / "ev.jsonl", "started", proc)["workdir"])
    c.wait_event(run_dir / "ev.jsonl", "armed", proc)
    runner = psutil.Process(proc.pid)
    time.sleep(1.0)  # let start-up stragglers (first counter sample, ...) pass
    names = py_spy_threads(proc.pid)
    load = start_loadgen(scr, args.seconds, port, args, run_dir / "load.json")
    s0 = Snapshot(runner, workdir, instance)
    load.wait(args.seconds + 60)
    s1 = Snapshot(runner, workdir, instance)
    ended_early = proc.poll() is not None or any(
        e["event"] == "triggered" for e in c.read_events(run_dir / "ev.jsonl"))
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    span = s1.time - s0.time
    threads = []
    for tid, b in s1.threads.items():
        a = s0.threads.get(tid, {"cpu": 0.0, "voluntary": 0, "involuntary": 0})
        info = names.get(tid, {"name": f"tid {tid}", "frames": ""})
        threads.append({"tid": tid, "name": info["name"], "waits_in": info["frames"],
                        "cpu_ms": (b["cpu"] - a["cpu"]) * 1000,
                        "wakeups_per_s": (b["voluntary"] - a["voluntary"]) / span,
                        "involuntary_per_s": (b["involuntary"] - a["involuntary"]) / span})
    children = [{"name": v["name"], "pid": pid,
                 "cpu_pct": (v["cpu"] - s0.children[pid]["cpu"]) / span * 100,
                 "write_bytes": v["write_bytes"] - s0.children[pid]["write_bytes"],
                 "write_chars": v["write_chars"] - s0.children[pid]["write_chars"]}
                for pid, v in s1.children.items() if pid in s0.children]
    return {
        "seconds": span, "ended_early": ended_early, "load": json.loads((run_dir / "load.json").read_text()),
        "runner_cpu_pct": (s1.cpu - s0.cpu) / span * 100,
        "runner_write_bytes": s1.write_bytes - s0.write_bytes,
        "runner_write_chars": s1.write_chars - s0.write_chars,
        "runner_wakeups_per_s": sum(t["wakeups_per_s"] for t in threads),
        "threads": sorted(threads, key=lambda t: -t["wakeups_per_s"]), "children": children,
        "dir_growth": {k: s1.dirs.get(k, 0) - s0.dirs.get(k, 0) for k in s1.dirs},
        "event_rate": (s1.events - s0.events) / span,
        "system_busy_cores": (s1.busy - s0.busy) / span,
    }


def measure_baseline(scr: c.Scratch, port: int, args: argparse.Namespace) -> Dict[str, Any]:
    out = scr.dir / "baseline-load.json"
    b0, t0 = system_busy(), time.monotonic()
    load = start_loadgen(scr, args.baseline_seconds, port, args, out)
    load.wait(args.baseline_seconds + 60)
    span = time.monotonic() - t0
    return {"seconds": span, "system_busy_cores": (system_busy() - b0) / span,
            "load": json.loads(out.read_text())}


def measure_old_style(scr: c.Scratch, port: int, args: argparse.Namespace) -> Dict[str, Any]:
    out, log = scr.dir / "old.json", scr.dir / "old-kern.log"
    load = start_loadgen(scr, args.baseline_seconds, port, args, scr.dir / "old-load.json")
    b0, t0 = system_busy(), time.monotonic()
    with open(out, "w") as f:
        waiter = scr.popen([sys.executable, __file__, "--old-wait", log, "--seconds",
                            args.baseline_seconds, "--pattern", f"bench{uuid.uuid4().hex}"], stdout=f)
    waiter.wait(args.baseline_seconds + 60)
    load.wait(60)
    span = time.monotonic() - t0
    res = json.loads(out.read_text())
    res.update(system_busy_cores=(system_busy() - b0) / span, cpu_pct=res["cpu_s"] / res["seconds"] * 100)
    return res


def old_wait(log: Path, seconds: float, pattern: str) -> None:
    """The old script's wait: a kernel log follower into a file, grep on it every 0.5 s.
    Prints the CPU it (and its children: dmesg, every grep) used, start-up excluded."""
    began, self0 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    with open(log, "w") as f:
        follower = subprocess.Popen(["dmesg", "--follow-new"], stdout=f)
    checks = 0
    try:
        while time.monotonic() - began < seconds:
            time.sleep(0.5)
            checks += 1
            if subprocess.run(["grep", "-Eq", pattern, str(log)]).returncode == 0:
                break
    finally:
        follower.terminate()
        follower.wait(10)
    s, ch = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (s.ru_utime + s.ru_stime - self0.ru_utime - self0.ru_stime) + ch.ru_utime + ch.ru_stime
    print(json.dumps({"seconds": time.monotonic() - began, "cpu_s": cpu, "checks": checks,
                      "wakeups_per_s": checks / (time.monotonic() - began)}))


def report(ours: Dict[str, Any], base: Optional[Dict[str, Any]], old: Optional[Dict[str, Any]],
           args: argparse.Namespace) -> None:
    load = ours["load"]
    print(f"idle cost: armed {ours['seconds']:.0f} s under load: getppid {args.getppid_rate:g}/s, "
          f"UDP {args.udp_rate:g} pkt/s; measured trace event rate {ours['event_rate']:.0f}/s "
          f"({load['getppid_calls']} calls)" + ("; RUN ENDED EARLY" if ours["ended_early"] else ""))
    tcpdump = [ch for ch in ours["children"] if ch["name"] == "tcpdump"]
    pct = ours["runner_cpu_pct"]
    children = sum(ch["cpu_pct"] for ch in ours["children"])
    rows = [
        ["runner CPU, all threads (% of one core)", f"{pct:.3f}", "< 0.5", "met" if pct < 0.5 else "MISSED"],
        ["runner wake-ups per second", ours["runner_wakeups_per_s"], "", ""],
        ["children CPU (% of one core)", f"{children:.3f}", "",
         ", ".join(ch["name"] for ch in ours["children"])],
        ["runner write() bytes", ours["runner_write_chars"], "", ""],
        ["runner bytes to storage", ours["runner_write_bytes"], "", ""],
        ["ftrace work dir growth (bytes)", ours["dir_growth"].get("ftrace"), "0",
         "met" if ours["dir_growth"].get("ftrace") == 0 else "MISSED"],
        ["tcpdump writes (bytes)", sum(ch["write_chars"] for ch in tcpdump), "", ""],
    ]
    rows += [[f"{k} work dir growth (bytes)", v, "", ""]
             for k, v in ours["dir_growth"].items() if k != "ftrace"]
    if old:
        rows.append(["old-style waiter alone (% of one core)", f"{old['cpu_pct']:.3f}", "",
                     (f"x{old['cpu_pct'] / pct:.1f} ours, " if pct else "")
                     + f"{old['wakeups_per_s']:.1f} greps/s"])
    print(c.table(["measure (ours, armed)", "value", "goal", ""], rows))
    if base:
        lo, lb = ours["load"], base["load"]
        po, pb = lo["cpu_s"] / lo["seconds"] * 100, lb["cpu_s"] / lb["seconds"] * 100
        print(f"load generator's own CPU: {pb:.3f} % alone, {po:.3f} % with scoutfs-collect armed "
              f"({po - pb:+.3f} %: the in-kernel event recording and packet capture are charged to it)")
    if args.show_system:
        sysrows = [["load generator alone (baseline)", base and base["system_busy_cores"] * 100, "-"],
                   ["load + scoutfs-collect armed", ours["system_busy_cores"] * 100,
                    base and (ours["system_busy_cores"] - base["system_busy_cores"]) * 100]]
        if old:
            sysrows.append(["load + old-style wait", old["system_busy_cores"] * 100,
                            base and (old["system_busy_cores"] - base["system_busy_cores"]) * 100])
        print(c.table(["whole system busy CPU", "% of one core", "minus baseline"], sysrows))
    print()
    trows = [[t["name"], t["cpu_ms"], t["wakeups_per_s"], t["waits_in"][:80]] for t in ours["threads"]]
    print(c.table(["runner thread", "CPU ms", "wake-ups/s", "waits in (py-spy dump)"], trows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60, help="armed window measured (default 60)")
    ap.add_argument("--baseline-seconds", type=float, default=30,
                    help="length of each baseline window (default 30)")
    ap.add_argument("--getppid-rate", type=float, default=1000, help="trace events/s to cause (default 1000)")
    ap.add_argument("--udp-rate", type=float, default=100, help="UDP packets/s to the port (default 100)")
    ap.add_argument("--no-baseline", action="store_true", help="skip both baselines")
    ap.add_argument("--show-system", action="store_true",
                    help="also print whole-system busy CPU (meaningless if anything else runs)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    ap.add_argument("--old-wait", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--pattern", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.old_wait:
        old_wait(args.old_wait, args.seconds, args.pattern)
        return
    c.require_root()
    with c.Scratch("idle", keep=args.keep) as scr:
        sysfs = scr.dir / "sysfs"
        scoutfs_fixture.build(sysfs)
        sink = c.UdpLoad(0)  # only its sink socket: the port, no ICMP back
        scr.cleanups.append(sink.close)
        base = None if args.no_baseline else measure_baseline(scr, sink.port, args)
        ours = measure_ours(scr, sysfs, sink.port, args)
        old = None if args.no_baseline else measure_old_style(scr, sink.port, args)
    report(ours, base, old, args)
    c.write_results("idle_cost", {"options": {k: v for k, v in vars(args).items() if v is not None},
                                   "ours": ours, "baseline": base, "old_style": old})


if __name__ == "__main__":
    c.run(main)
