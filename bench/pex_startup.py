"""Benchmark: start-up of the one-file pex against the installed console script.

Median wall time of N runs (default 10), interleaved, of ``--help`` and ``--version`` through

* the console script installed beside this Python (``.venv-3.9/bin/scoutfs-collect``), the
  baseline: the issue's goal is the pex within 2x of it;
* ``dist/scoutfs-collect.pex`` (tools/build-dist.sh), warm: its venv already laid out under
  PEX_ROOT, as on every run after the first on a node;

plus the pex's first run (cold: it lays its venv out under an empty PEX_ROOT) and
``python -c pass``. The pex runs with a PATH holding only this Python (as ``python3.X``), so
it picks the same interpreter as the baseline (and mkdir, which its boot uses on a first run).

Run with the Python whose venv has scoutfs-collect installed (tools/setup.sh):
    .venv-3.9/bin/python bench/pex_startup.py [--pex dist/scoutfs-collect.pex] [--runs 10]
Prints a table, writes bench/results/pex_startup.json. Never fails on a number.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import common as c

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: List[str], env: Dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - t) * 1000


def base_python() -> Path:
    """The interpreter behind this venv's python (what the pex's venv will link to)."""
    return Path(getattr(sys, "_base_executable", sys.executable)).resolve()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pex", type=Path, default=ROOT / "dist" / "scoutfs-collect.pex",
                    help="the pex (default: dist/scoutfs-collect.pex)")
    ap.add_argument("--runs", type=int, default=10, help="runs of each (default 10)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    args = ap.parse_args()
    if not args.pex.is_file():
        sys.exit(f"{args.pex}: no such pex (bash tools/build-dist.sh makes it)")
    installed = Path(sys.executable).parent / "scoutfs-collect"
    if not installed.exists():
        sys.exit(f"{installed}: not installed beside this Python (bash tools/setup.sh 3.9)")
    minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    with c.Scratch("pex_startup", keep=args.keep) as scr:
        only_this_python = scr.dir / "bin"
        only_this_python.mkdir()
        (only_this_python / minor).symlink_to(base_python())
        (only_this_python / "mkdir").symlink_to(subprocess.check_output(["sh", "-c", "command -v mkdir"],
                                                                        text=True).strip())
        env = {"PATH": str(only_this_python), "HOME": str(scr.dir), "LANG": "C.UTF-8",
               "PEX_ROOT": str(scr.dir / "pex-root")}
        cold = [timed([str(args.pex), "--version"], {**env, "PEX_ROOT": str(scr.dir / f"cold{i}")})
                for i in range(3)]
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "installed --help": [str(installed), "--help"],
            "pex --help": [str(args.pex), "--help"],
            "installed --version": [str(installed), "--version"],
            "pex --version": [str(args.pex), "--version"],
        }
        times: Dict[str, List[float]] = {k: [] for k in cases}
        for argv in cases.values():  # warm the page cache and lay the pex out once
            timed(argv, env)
        for _ in range(args.runs):  # interleaved, so drift hits every case alike
            for name, argv in cases.items():
                times[name].append(timed(argv, env))
    baseline = {"pex --help": "installed --help", "pex --version": "installed --version"}
    rows = [[name, c.median(v), min(v), max(v),
             c.ratio(c.median(v), c.median(times[baseline[name]])) if name in baseline else None]
            for name, v in times.items()]
    rows.append(["pex first run (lays out its venv)", c.median(cold), min(cold), max(cold), None])
    print(f"pex start-up: {args.runs} runs each, {args.pex} ({args.pex.stat().st_size / 1e6:.1f} MB), "
          f"{base_python()} ({sys.version.split()[0]})")
    print(c.table(["command", "median ms", "min", "max", "x installed (goal <= 2)"], rows))
    c.write_results("pex_startup", {
        "options": {**vars(args), "pex": str(args.pex)}, "pex_bytes": args.pex.stat().st_size,
        "times_ms": times, "cold_ms": cold,
        "summary": [dict(zip(["command", "median_ms", "min_ms", "max_ms", "x_installed"], r)) for r in rows]})


if __name__ == "__main__":
    os.umask(0o022)
    c.run(main)
