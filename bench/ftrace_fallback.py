"""Benchmark: ``inspect --timeline`` of an archive without trace.txt (events from trace.dat)
and without trace.txt or trace.dat (events from the raw ring pages), against the same
archive with trace.txt and against ``trace-cmd report`` of the same trace.dat, in the
same run.

1. A real capture through the CLI: dmesg and ftrace with the default ring
   (buffer_size_kb 10240) filled with trace_marker writes from one writer per CPU until
   every CPU's ring has wrapped (bench/timeline.py's fill_ring), then a kmsg trigger.
2. The archive unpacked, trace.txt (and trace.dat) removed, the manifest's file list
   redone as ``scoutfs-collect pack`` does, packed again with the project's packer.
3. Alternating runs (default 3) of each command, output to /dev/null: wall time, CPU
   time, peak RSS of the process tree and peak disk use of its TMPDIR (sampled every
   20 ms), which holds the analysis temporary directory and its copies.

Prints a table and writes bench/results/ftrace_fallback.json. It records numbers, it
never fails on one. Run as root with the project's Python (tools/setup.sh makes .venv-3.11):
    .venv-3.11/bin/python bench/ftrace_fallback.py [--runs 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import common as c
import timeline as tl

from scoutfs_collect.archive import write as archive_write
from scoutfs_collect.system import tracefs


def _disk_used(root: Path) -> int:
    total = 0
    for base, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except OSError:
                pass
    return total


def measure(argv: Sequence[str], env: Dict[str, str], cwd: Path, tmpdir: Path) -> Dict[str, Any]:
    """Wall and CPU time, peak tree RSS and peak disk use below ``tmpdir`` of one command."""
    began = time.monotonic()
    p = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=dict(env, TMPDIR=str(tmpdir)), cwd=cwd)
    peak, disk, done = [0], [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], tl._tree_rss(p.pid))
            disk[0] = max(disk[0], _disk_used(tmpdir))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - began
    done.set()
    t.join()
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed: {err[-500:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "tree_rss_mb": peak[0] / 1e6,
            "tmp_disk_mb": disk[0] / 1e6}


def capture(scratch: c.Scratch, env: Dict[str, str]) -> Path:
    instance = scratch.instance_name("ftfall")
    tag = f"scoutfs-bench-ftfall-{os.getpid()}"
    profile = scratch.dir / "p.yaml"
    profile.write_text(f"""\
collectors:
  dmesg: {{}}
  ftrace:
    instance: {instance}
    events: ["sched:sched_switch", "sched:sched_wakeup"]
    freeze_on: ["*{tag} end*"]
triggers:
  end: {{type: kmsg, pattern: '{tag} end'}}
""")
    events = scratch.dir / "events.jsonl"
    run = scratch.popen(c.cli_argv("--profile", profile, "--output-dir", scratch.dir, "--events-file", events,
                                   "127.0.0.1", "7001"), env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, text=True)
    c.wait_event(events, "armed", run)
    tl.fill_ring(instance, tracefs.cpu_ids(), 25 << 20, tl.RING_RATE)
    c.kmsg_write(f"{tag} end")
    out, _ = run.communicate(timeout=900)
    archive = Path(out.strip().splitlines()[-1].split(": ", 1)[1])
    print(f"capture: {archive} ({archive.stat().st_size / 1e6:.0f} MB)")
    return archive


def variant(archive: Path, where: Path, remove: List[str]) -> Path:
    """``archive`` without ``remove`` (files of its ftrace directory), its manifest's file
    list redone as ``scoutfs-collect pack`` does."""
    top = c.extract(archive, where / "x")
    for rel in remove:
        (top / "ftrace" / rel).unlink()
    manifest = json.loads((top / "manifest.json").read_text())
    manifest["plugins"]["ftrace"]["files"] = archive_write.sha256_files(top / "ftrace")
    (top / "manifest.json").write_text(json.dumps(manifest))
    (where / "out").mkdir()
    packed = archive_write.pack(top, where / "out", "zstd")
    shutil.rmtree(where / "x")
    return packed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()
    c.require_root()
    with c.Scratch("ftfall", keep=args.keep) as scratch:
        env = c.cli_env(scratch.dir)
        archive = capture(scratch, env)
        top = c.extract(archive, scratch.dir / "orig")
        dat = top / "ftrace" / "trace.dat"
        raw_mb = sum(p.stat().st_size for p in (top / "ftrace" / "raw").glob("cpu*")) / 1e6
        archives = {
            "with trace.txt": archive,
            "from trace.dat": variant(archive, scratch.dir / "v1", ["trace.txt"]),
            "from raw pages": variant(archive, scratch.dir / "v2", ["trace.txt", "trace.dat"]),
        }
        commands = {f"inspect --timeline ({k})": c.cli_argv("inspect", a, "--timeline")
                    for k, a in archives.items()}
        commands["trace-cmd report trace.dat"] = ["trace-cmd", "report", str(dat)]
        tmpdir = scratch.dir / "tmp"
        tmpdir.mkdir()
        results: Dict[str, List[Dict[str, Any]]] = {k: [] for k in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                results[name].append(measure(argv, env, scratch.dir, tmpdir))
        fields = ("wall_s", "cpu_s", "tree_rss_mb", "tmp_disk_mb")
        med = {k: {f: c.median(r[f] for r in v) for f in fields} for k, v in results.items()}
        rows = [[k, *(v[f] for f in fields)] for k, v in med.items()]
        heads = [f"command (median of {args.runs})", "wall s", "CPU s", "tree RSS MB", "TMPDIR peak MB"]
        print(c.table(heads, rows))
        print(f"trace.dat {dat.stat().st_size / 1e6:.1f} MB, raw pages {raw_mb:.1f} MB; "
              f"load average {os.getloadavg()[0]:.1f}")
        c.write_results("ftrace_fallback", {
            "trace_dat_mb": dat.stat().st_size / 1e6, "raw_mb": raw_mb,
            "archive_mb": {k: a.stat().st_size / 1e6 for k, a in archives.items()},
            "median": med, "load_average": os.getloadavg(), "runs": results,
        })


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    c.run(main)
