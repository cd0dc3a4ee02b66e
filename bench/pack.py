"""Benchmark: our streamed ``archive.pack()`` (zstd) against the tar commands it replaces.

Generates realistic captured data (ftrace text, pcap files, per-CPU binary buffers) in a
temporary directory, then alternates runs of

* ``pack()``                      scoutfs_collect.archive.write.pack(..., "zstd")
* ``tar -I 'zstd -T0' -cf``       multi-threaded zstd through tar
* ``tar --zstd -cf``              what the original script does (single-threaded zstd)

on the same input, each in its own subprocess, and reports the median wall time, the
compressed size and ratio, the peak RSS of the largest process (wait4) and of the whole
process tree (psutil sampling every 20 ms), and CPU time. Prints a table and writes
``bench/results/pack.json``. It records numbers, it never fails on one.

Run as root with the project's Python (tools/setup.sh makes .venv-3.11):
    .venv-3.11/bin/python bench/pack.py --size-mb 256
The input is read from the page cache in every run (generated just before, RAM permitting).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import common as c
import psutil

RESULTS = c.RESULTS_DIR / "pack.json"
MiB = 1 << 20
STEM = "scoutfs-collect.benchhost.20240501-120000Z"

EVENTS = ["scoutfs_lock_grant", "scoutfs_lock_invalidate", "scoutfs_net_send_message",
          "scoutfs_net_recv_message", "scoutfs_item_read", "scoutfs_btree_read",
          "scoutfs_data_alloc_block", "scoutfs_client_commit", "scoutfs_trans_hold",
          "scoutfs_srch_compact", "scoutfs_quorum_heartbeat", "scoutfs_get_block"]
TASKS = ["kworker/u8:2", "scoutfs_server", "scoutfs_client", "fio", "rsync", "kswapd0",
         "scoutfs_quorum", "cp"]


# ------------------------------------------------------------------ data generation


def gen_ftrace_text(path: Path, size: int, rng: random.Random) -> None:
    """trace-cmd report / tracefs ``trace`` style lines with varying fields."""
    t = 12345.0
    with open(path, "w") as f:
        f.write("# tracer: nop\n#\n#  TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION\n")
        written = 0
        while written < size:
            lines = []
            for _ in range(2000):
                t += rng.expovariate(20000)
                task = rng.choice(TASKS)
                ev = rng.choice(EVENTS)
                lines.append(
                    f"{task:>16}-{rng.randint(100, 40000):<6} [{rng.randrange(8):03d}] "
                    f"{rng.choice(('d..1.', '...1.', 'd..2.', '.....'))} {t:.6f}: {ev}: "
                    f"f.1a2b3c.r.{rng.choice(('4d5e6f', '90ab12', 'cd34ef'))} "
                    f"ino {rng.randint(1, 5_000_000)} "
                    f"blkno 0x{rng.getrandbits(40):x} seq {rng.getrandbits(32)} "
                    f"mode {rng.choice(('READ', 'WRITE', 'WRITE_ONLY', 'NULL'))} "
                    f"ret {rng.choice((0, 0, 0, 0, -11, -110))}\n")
            chunk = "".join(lines)
            f.write(chunk)
            written += len(chunk)


def gen_pcap(path: Path, size: int, rng: random.Random) -> None:
    """Ethernet/IPv4/TCP packets of scoutfs-like messages: headers, keys, file data."""
    ts = 1714564800.0
    seq = rng.getrandbits(32)
    src, dst = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        written = 24
        while written < size:
            ts += rng.expovariate(5000)
            kind = rng.random()
            if kind < 0.55:  # small request/response: structured, compressible
                body = struct.pack("<QQHHI", rng.getrandbits(20), rng.getrandbits(12),
                                   rng.choice((3, 7, 9, 12)), 0, 64)
                body += b"".join(struct.pack("<QQ", rng.randrange(1 << 24), i)
                                 for i in range(rng.randint(1, 6)))
            elif kind < 0.85:  # item/btree block: mostly structured, some random
                body = (struct.pack("<QQ", 0x5C0F75, rng.getrandbits(32)) * 40
                        + os.urandom(rng.randint(200, 800)))
            else:  # file data: incompressible
                body = os.urandom(rng.randint(1200, 1448))
            payload = struct.pack("<QQHHI", rng.getrandbits(16), rng.getrandbits(32), 1, 0,
                                  len(body)) + body
            sport, dport = 41000, 7777
            if rng.random() < 0.5:
                src, dst, sport, dport = dst, src, dport, sport
            tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, seq ^ 0x5A5A, 0x80, 0x18,
                              502, 0, 0) + b"\x01\x01\x08\x0a" + os.urandom(8)
            seq = (seq + len(payload)) & 0xFFFFFFFF
            ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload),
                             rng.getrandbits(16), 0x4000, 64, 6, 0, src, dst)
            frame = (b"\x52\x54\x00\x12\x34\x56\x52\x54\x00\xab\xcd\xef\x08\x00"
                     + ip + tcp + payload)
            f.write(struct.pack("<IIII", int(ts), int(ts % 1 * 1e6), len(frame), len(frame)))
            f.write(frame)
            written += 16 + len(frame)


def gen_percpu(path: Path, size: int, rng: random.Random) -> None:
    """ftrace ring-buffer-like pages: timestamped records, random payloads, partial pages."""
    with open(path, "wb") as f:
        ts = rng.getrandbits(40)
        for _ in range(size // 4096):
            ts += rng.randint(1000, 100000)
            kind = rng.random()
            if kind < 0.6:
                recs = b"".join(struct.pack("<IHHQQ", rng.randint(0, 4000), rng.choice(
                    (301, 302, 317, 344)), 0, rng.getrandbits(22), rng.getrandbits(64) & 0xFFFF)
                    for _ in range(160))
            elif kind < 0.85:
                recs = os.urandom(4080)
            else:
                recs = os.urandom(rng.randint(100, 2000))
            page = struct.pack("<QQ", ts, len(recs)) + recs
            f.write(page[:4096].ljust(4096, b"\0"))


def generate(root: Path, size_mb: int) -> Path:
    rng = random.Random(4242)
    total = size_mb * MiB
    wd = root / STEM
    for sub in ("ftrace/per_cpu", "tcpdump", "kmsg"):
        (wd / sub).mkdir(parents=True, exist_ok=True)
    (wd / "manifest.json").write_text(json.dumps({"format": 1, "bench": True}))
    gen_ftrace_text(wd / "ftrace" / "trace.txt", int(total * 0.40), rng)
    pcap_total = int(total * 0.35)
    for i in range(max(1, pcap_total // (50 * MiB) + (pcap_total % (50 * MiB) > 0))):
        part = min(50 * MiB, pcap_total - i * 50 * MiB)
        gen_pcap(wd / "tcpdump" / f"tcpdump.pcap{i}", part, rng)
    ncpu = 4
    for cpu in range(ncpu):
        d = wd / "ftrace" / "per_cpu" / f"cpu{cpu}"
        d.mkdir()
        gen_percpu(d / "trace_pipe_raw", int(total * 0.25) // ncpu, rng)
    gen_ftrace_text(wd / "kmsg" / "kmsg.txt", 256 * 1024, rng)
    return wd


# ------------------------------------------------------------------ measuring


PACK_CODE = ("import sys; from pathlib import Path; from scoutfs_collect.archive.write import pack; "
             "pack(Path(sys.argv[1]), Path(sys.argv[2]), 'zstd')")


def commands(wd: Path, out: Path) -> Dict[str, List[str]]:
    archive = out / (wd.name + ".tar.zst")
    return {
        "pack()": [sys.executable, "-c", PACK_CODE, str(wd), str(out)],
        "tar -I 'zstd -T0'": ["tar", "-I", "zstd -T0", "-cf", str(archive), "-C",
                              str(wd.parent), wd.name],
        "tar --zstd (old)": ["tar", "--zstd", "-cf", str(archive), "-C", str(wd.parent),
                             wd.name],
    }


def run_one(scr: c.Scratch, argv: List[str]) -> Dict[str, object]:
    """Run argv to completion; wall time, peak RSS (largest process, whole tree), CPU."""
    started = time.monotonic()
    proc = scr.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_tree = [0]
    done = threading.Event()

    def sample() -> None:
        try:
            top = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            rss = 0
            try:
                for p in [top, *top.children(recursive=True)]:
                    try:
                        rss += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                break
            peak_tree[0] = max(peak_tree[0], rss)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    proc.stderr.close()
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        # ru_maxrss of the largest process; on Python >= 3.10 (vfork) at least this
        # benchmark's own peak, which Linux carries across exec. tree_rss_mib is sampled.
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "tree_rss_mib": round(peak_tree[0] / MiB, 1),
        "exit": proc.returncode,
        "error": err.decode(errors="replace").strip()[-500:] or None,
    }


def version(argv: List[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def median(values: List[float]) -> Optional[float]:
    return round(statistics.median(values), 3) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="input size to generate (MiB)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each method (alternated)")
    ap.add_argument("--dir", default="/var/tmp", help="where the temporary input goes")
    ap.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = ap.parse_args()

    with c.Scratch("pack", parent=args.dir) as scr:  # removed also on Ctrl-C and SIGTERM
        tmp = scr.dir
        t0 = time.monotonic()
        wd = generate(tmp / "in", args.size_mb)
        files = [p for p in wd.rglob("*") if p.is_file()]
        input_bytes = sum(p.stat().st_size for p in files)
        print(f"generated {input_bytes / MiB:.0f} MiB in {len(files)} files in "
              f"{time.monotonic() - t0:.1f} s ({wd})", flush=True)
        names = list(commands(wd, tmp).keys())
        runs: Dict[str, List[Dict[str, object]]] = {n: [] for n in names}
        for r in range(args.runs):
            order = names[r % len(names):] + names[:r % len(names)]  # alternate who goes first
            for name in order:
                out = tmp / "out"
                out.mkdir()
                result = run_one(scr, commands(wd, out)[name])
                archives = list(out.iterdir())
                result["size"] = archives[0].stat().st_size if len(archives) == 1 else None
                runs[name].append(result)
                shutil.rmtree(out)
                print(f"  run {r + 1} {name:<20} {result['wall_s']:7.2f} s  "
                      f"exit {result['exit']}", flush=True)

    summary = {}
    for name, rs in runs.items():
        ok = [r for r in rs if r["exit"] == 0 and r["size"]]
        size = median([r["size"] for r in ok])
        summary[name] = {
            "wall_s_median": median([r["wall_s"] for r in ok]),
            "cpu_s_median": median([r["cpu_s"] for r in ok]),
            "size": int(size) if size else None,
            "ratio": round(input_bytes / size, 3) if size else None,
            "max_rss_mib": max((r["max_rss_mib"] for r in ok), default=None),
            "tree_rss_mib": max((r["tree_rss_mib"] for r in ok), default=None),
            "failed_runs": len(rs) - len(ok),
            "runs": rs,
        }

    print(f"\ninput {input_bytes / MiB:.0f} MiB, {args.runs} runs each, "
          f"{os.cpu_count()} CPUs, warm page cache")
    print(f"{'method':<20} {'wall s':>8} {'cpu s':>8} {'MiB out':>9} {'ratio':>6} "
          f"{'RSS max':>8} {'RSS tree':>9} {'failed':>6}")
    for name, s in summary.items():
        def cell(v, fmt):
            return format(v, fmt) if v is not None else "-"
        print(f"{name:<20} {cell(s['wall_s_median'], '8.2f')} {cell(s['cpu_s_median'], '8.2f')} "
              f"{cell(s['size'] and s['size'] / MiB, '9.1f')} {cell(s['ratio'], '6.2f')} "
              f"{cell(s['max_rss_mib'], '8.1f')} {cell(s['tree_rss_mib'], '9.1f')} "
              f"{s['failed_runs']:>6}")

    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "input_bytes": input_bytes, "input_files": len(files), "runs": args.runs,
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version(), "tar": version(["tar", "--version"]),
                    "zstd": version(["zstd", "--version"])},
        "methods": summary,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {args.output}")


if __name__ == "__main__":
    c.run(main)
