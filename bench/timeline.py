"""Benchmark: ``inspect --timeline`` and ``report`` over a full default ftrace ring
(10 MiB per CPU, wrapped) plus 100 MB of pcap, against ``trace-cmd report`` of the same
trace.dat plus ``tcpdump -n -r`` of the same pcap files, in the same run.

1. A real capture through the CLI: ftrace with the default ring (buffer_size_kb 10240)
   on sched_switch/sched_wakeup plus trace_marker writes from one writer per CPU at
   3.3 MiB/s until every CPU's ring has wrapped 2.5 times (the ring then holds ~3 s, of
   which the default 2 s window is most); tcpdump on lo (a ring of 50 MB files keeping at
   least --pcap-mb, default 100; 1000 makes the 1 GiB archive of the memory goal) filled
   with 1400-byte UDP datagrams; dmesg; a kmsg trigger line.
2. Alternating runs (default 3) of each command, output to /dev/null: wall time and
   peak RSS of the process tree (psutil, sampled every 20 ms; the largest process by
   wait4 too). Ours reads the compressed archive as it is; the baselines read the
   extracted files (extraction not counted).

Prints a table and writes bench/results/timeline.json. It records numbers, it never
fails on one. Run as root with the project's Python (tools/setup.sh makes .venv-3.11):
    .venv-3.11/bin/python bench/timeline.py [--runs 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import common as c
import psutil

from scoutfs_collect.system import tracefs

RING_RATE = 3.3 * (1 << 20)  # bytes/s per CPU: a 10 MiB ring then holds ~3 s (issue 12's example)


def _tree_rss(pid: int) -> int:
    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def medians(commands: Dict[str, Sequence[str]], runs: int, env: Dict[str, str], cwd: Path
            ) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, List[Dict[str, Any]]]]:
    """Each command measured ``runs`` times, the commands alternating (so a change of the
    machine's load falls on all of them alike): per command the median of each figure,
    and every run's figures."""
    results: Dict[str, List[Dict[str, Any]]] = {k: [] for k in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            results[name].append(measure(argv, env, cwd))
    return {k: {f: c.median(r[f] for r in v) for f in ("wall_s", "cpu_s", "tree_rss_mb", "maxrss_mb")}
            for k, v in results.items()}, results


def measure(argv: Sequence[str], env: Dict[str, str], cwd: Path) -> Dict[str, Any]:
    """Wall time, CPU time (wait4: it and its reaped children, e.g. zstd), peak tree RSS
    (sampled) and max RSS (wait4) of one command."""
    began = time.monotonic()
    p = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _tree_rss(p.pid))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - began
    done.set()
    t.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {err[-500:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,  # with its reaped children
            # ru_maxrss is at least this benchmark's own peak on Python >= 3.10 (vfork:
            # Linux carries it across exec); tree_rss_mb is sampled from /proc.
            "tree_rss_mb": peak[0] / 1e6, "maxrss_mb": usage.ru_maxrss / 1024}


def fill_ring(instance: str, cpus: List[int], bytes_per_cpu: int, rate: float) -> None:
    """One marker writer pinned to each CPU, each writing ``bytes_per_cpu`` of markers at
    ``rate`` bytes/s (in 10 ms batches), so the ring holds the seconds such a rate gives."""
    children = []
    for cpu in cpus:
        pid = os.fork()
        if pid == 0:
            try:
                os.sched_setaffinity(0, {cpu})
                fd = os.open(f"/sys/kernel/tracing/instances/{instance}/trace_marker", os.O_WRONLY)
                written, i, began = 0, 0, time.monotonic()
                while written < bytes_per_cpu:
                    ahead = written / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)  # pacing the load, not waiting for a condition
                    for _ in range(200):
                        line = f"bench marker cpu{cpu} {i:08d} ".encode() * 4
                        os.write(fd, line)
                        written += len(line) + 16
                        i += 1
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


def capture(scratch: c.Scratch, env: Dict[str, str], pcap_mb: int) -> Path:
    instance = scratch.instance_name("timeline")
    load = c.UdpLoad(rate=0)
    scratch.cleanups.append(load.close)
    tag = f"scoutfs-bench-timeline-{os.getpid()}"
    profile = scratch.dir / "p.yaml"
    files = max(3, -(-pcap_mb // 50) + 1)  # a ring of files of 50 MB keeping >= pcap_mb
    fill = 220_000_000 if pcap_mb <= 100 else int(pcap_mb * 1.25e6)
    profile.write_text(f"""\
collectors:
  dmesg: {{}}
  ftrace:
    instance: {instance}
    events: ["sched:sched_switch", "sched:sched_wakeup"]
    freeze_on: ["*{tag} end*"]
  tcpdump: {{interface: lo, heartbeat_timeout: 0, file_size_mb: 50, file_count: {files}}}
triggers:
  end: {{type: kmsg, pattern: '{tag} end'}}
""")

    def load_both() -> str:
        sent = load.fill(fill, mb_per_s=40, size=1400)  # wraps the ring of pcap files: >= pcap_mb kept
        fill_ring(instance, tracefs.cpu_ids(), 25 << 20, RING_RATE)
        return f"{sent / 1e6:.0f} MB of UDP sent"

    return c.capture_archive(scratch, env, profile, load.port, load_both, f"{tag} end", 900)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--pcap-mb", type=int, default=100,
                    help="MB of pcap the capture keeps (default 100; 1000 for the 1 GiB archive)")
    args = ap.parse_args()
    c.require_root()
    with c.Scratch("timeline", keep=args.keep) as scratch:
        env = c.cli_env(scratch.dir)
        archive = capture(scratch, env, args.pcap_mb)
        top = c.extract(archive, scratch.dir / "x")
        dat = top / "ftrace" / "trace.dat"
        pcaps = sorted((top / "tcpdump").glob("tcpdump.pcap[0-9]*"))
        manifest = json.loads((top / "manifest.json").read_text())
        ft = manifest["plugins"]["ftrace"]["details"]
        commands = {
            "inspect --timeline": c.cli_argv("inspect", archive, "--timeline"),
            "report": c.cli_argv("report", archive, "-o", scratch.dir / "report.html"),
            "trace-cmd report": ["trace-cmd", "report", str(dat)],
        }
        for i, p in enumerate(pcaps):
            commands[f"tcpdump -n -r pcap{i}"] = ["tcpdump", "-n", "-r", str(p)]
        med, results = medians(commands, args.runs, env, scratch.dir)
        baseline = [k for k in med if k.startswith(("trace-cmd", "tcpdump"))]
        base_wall = sum(med[k]["wall_s"] for k in baseline)
        base_cpu = sum(med[k]["cpu_s"] for k in baseline)
        ours = med["inspect --timeline"]
        lines = subprocess.run(commands["inspect --timeline"], capture_output=True, env=env,
                               cwd=scratch.dir).stdout.count(b"\n")
        rows = [[k, v["wall_s"], v["cpu_s"], v["tree_rss_mb"], v["maxrss_mb"]] for k, v in med.items()]
        rows.append(["baseline sum (trace-cmd + tcpdump)", base_wall, base_cpu, None, None])
        print(c.table([f"command (median of {args.runs})", "wall s", "CPU s", "tree RSS MB", "max RSS MB"],
                      rows))
        print(f"inspect --timeline / baseline: {c.fmt(c.ratio(ours['wall_s'], base_wall), 2)}x wall, "
              f"{c.fmt(c.ratio(ours['cpu_s'], base_cpu), 2)}x CPU (goal <= 1.0), RSS "
              f"{c.fmt(ours['tree_rss_mb'])} MB (goal < 150); timeline lines: {lines}; load average "
              f"{os.getloadavg()[0]:.1f}")
        print(f"report: {c.fmt(med['report']['wall_s'], 2)} s (goal < 10), RSS "
              f"{c.fmt(med['report']['tree_rss_mb'])} MB")
        c.write_results("timeline", {
            "archive_mb": archive.stat().st_size / 1e6,
            "content_mb": sum(f.stat().st_size for f in top.rglob("*") if f.is_file()) / 1e6,
            "trace_dat_mb": dat.stat().st_size / 1e6,
            "pcap_mb": sum(p.stat().st_size for p in pcaps) / 1e6,
            "ftrace_overrun": sum(s["overrun"] for s in ft["cpu_stats"]),
            "buffer_size_kb": ft["buffer_size_kb"], "timeline_lines": lines,
            "median": med, "baseline_wall_s": base_wall, "baseline_cpu_s": base_cpu,
            "ratio": c.ratio(ours["wall_s"], base_wall), "cpu_ratio": c.ratio(ours["cpu_s"], base_cpu),
            "load_average": os.getloadavg(), "runs": results,
        })


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    c.run(main)
