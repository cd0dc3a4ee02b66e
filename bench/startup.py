"""Benchmark: start-up time of the scoutfs-collect command.

Median wall time of N runs (default 10) of:

* ``scoutfs-collect --help`` and ``--version`` (the installed console script), against
  ``python -c pass`` and ``python -c "import pluggy, yaml, psutil"`` (its dependencies);
* a real run of the default profile until the ``started`` (preflight done, lock
  taken) and ``armed`` (collectors recording, triggers armed) events of the events
  file, then SIGTERM. scoutfs is faked by a fixture sysfs tree, ftrace records
  sched:sched_switch instead of scoutfs:*, tcpdump listens on lo without the
  heartbeat check, and the trigger patterns are made unique to the run;

plus the top offenders of ``python -X importtime -m scoutfs_collect --help``.

Run as root with the project's Python (tools/setup.sh makes .venv-3.11):
    .venv-3.11/bin/python bench/startup.py [--runs 10]
Prints tables, writes bench/results/startup.json. Never fails on a number.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

import common as c

from scoutfs_collect.archive.read import read_manifest
from scoutfs_collect.demo import fixture as scoutfs_fixture


def console_script() -> List[str]:
    exe = Path(sys.executable).parent / "scoutfs-collect"
    return [str(exe)] if exe.exists() else c.cli_argv()


def timed(argv: List[str], env: Dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def to_armed(scr: c.Scratch, i: int, sysfs: Path) -> Dict[str, Any]:
    run_dir = scr.dir / f"run{i}"
    (run_dir / "out").mkdir(parents=True)
    nonce, events = f"bench{uuid.uuid4().hex[:10]}", run_dir / "ev.jsonl"
    sets = {"collectors.scoutfs-counters.sysfs_root": sysfs, "triggers.fence-request.sysfs_root": sysfs,
            "collectors.ftrace.events": "[sched:sched_switch]",
            "collectors.ftrace.instance": scr.instance_name("start"),
            "collectors.ftrace.freeze_on": f"['*{nonce}*']", "triggers.fencing.pattern": nonce,
            "collectors.tcpdump.interface": "lo", "collectors.tcpdump.heartbeat_timeout": 0}
    argv = console_script() + ["--profile", "default", "--output-dir", run_dir / "out",
                               "--events-file", events]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    t0 = time.time()
    proc = scr.popen(argv + ["127.0.0.1", "7999"], death_signal=signal.SIGTERM, env=c.cli_env(run_dir),
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = c.wait_event(events, "started", proc)["time"]
    armed = c.wait_event(events, "armed", proc)["time"]
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    out: Dict[str, Any] = {"started": started - t0, "armed": armed - t0,
                           "sigterm_to_exit": time.time() - sent, "exit_status": proc.returncode}
    archive = [e for e in c.read_events(events) if e["event"] == "archive"]
    if archive:
        m = read_manifest(Path(archive[0]["path"]))
        out["phases"] = {f"{name} {ph}": sec for name, p in m["plugins"].items()
                         for ph, sec in p["phases"].items() if ph in ("preflight", "start", "arm")}
    return out


def import_offenders(env: Dict[str, str], top: int) -> Tuple[float, List[Tuple[str, float, float]]]:
    """Total import time of --help and the slowest imports by cumulative time:
    (name indented by nesting depth, self ms, cumulative ms)."""
    err = subprocess.run(c.cli_argv("--help")[:1] + ["-X", "importtime"] + c.cli_argv("--help")[1:],
                         env=env, capture_output=True, text=True).stderr
    rows = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            rows.append((m.group(3) + m.group(4), int(m.group(1)) / 1000, int(m.group(2)) / 1000))
    total = sum(r[1] for r in rows)
    return total, sorted(rows, key=lambda r: -r[2])[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="runs of each (default 10)")
    ap.add_argument("--top", type=int, default=12, help="import offenders listed (default 12)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    args = ap.parse_args()
    c.require_root()
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import pluggy, yaml, psutil'": [sys.executable, "-c", "import pluggy, yaml, psutil"],
        "scoutfs-collect --version": console_script() + ["--version"],
        "scoutfs-collect --help": console_script() + ["--help"],
    }
    times: Dict[str, List[float]] = {k: [] for k in cases}
    armed: List[Dict[str, Any]] = []
    with c.Scratch("startup", keep=args.keep) as scr:
        env = c.cli_env(scr.dir)
        sysfs = scr.dir / "sysfs"
        scoutfs_fixture.build(sysfs)
        for argv in cases.values():  # warm the page cache once
            timed(argv, env)
        for _ in range(args.runs):  # interleaved, so drift hits every case alike
            for name, argv in cases.items():
                times[name].append(timed(argv, env) * 1000)
        for i in range(args.runs):
            armed.append(to_armed(scr, i, sysfs))
        total_import, offenders = import_offenders(env, args.top)
    base = c.median(times["python -c pass"])
    deps = c.median(times["python -c 'import pluggy, yaml, psutil'"])
    rows = [[name, c.median(v), min(v), max(v), c.ratio(c.median(v), base),
             None if name.startswith("python") else (c.median(v) or 0) - (deps or 0)]
            for name, v in times.items()]
    for key, label in (("started", "to 'started' (preflight done)"), ("armed", "to 'armed' (recording)")):
        v = [a[key] * 1000 for a in armed]
        rows.append([f"default profile {label}", c.median(v), min(v), max(v), c.ratio(c.median(v), base),
                     (c.median(v) or 0) - (deps or 0)])
    print(f"start-up: {args.runs} runs each, {sys.executable} ({sys.version.split()[0]})")
    print(c.table(["command", "median ms", "min", "max", "x python -c pass", "minus deps import"], rows))
    phases: Dict[str, List[float]] = {}
    for a in armed:
        for k, sec in a.get("phases", {}).items():
            phases.setdefault(k, []).append(sec * 1000)
    slow = sorted(((k, c.median(v)) for k, v in phases.items()), key=lambda kv: -(kv[1] or 0))
    print("slowest plugin phases before 'armed' (median ms): "
          + ", ".join(f"{k} {v:.1f}" for k, v in slow[:5]))
    print()
    print(f"python -X importtime -m scoutfs_collect --help: {total_import:.1f} ms in imports; "
          "slowest by cumulative time (indent = imported by the line above it):")
    print(c.table(["module", "self ms", "cumulative ms"], offenders))
    c.write_results("startup", {
        "options": vars(args), "times_ms": times, "armed_runs": armed, "phase_medians_ms": dict(slow),
        "import_total_ms": total_import, "import_offenders": offenders,
        "summary": [dict(zip(["command", "median_ms", "min_ms", "max_ms", "x_python_pass",
                              "minus_deps_ms"], r)) for r in rows]})


if __name__ == "__main__":
    c.run(main)
