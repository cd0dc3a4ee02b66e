"""Benchmark: how fast a kernel trigger line stops every collector, and what gets in after it.

Each run is a real capture through the real CLI (``python -m scoutfs_collect``): ftrace
on sched:sched_switch + sched:sched_wakeup with a freeze_on glob matching the trigger
line, tcpdump on lo with steady UDP traffic to the run's port, dmesg, scoutfs-counters
on a fixture sysfs tree of two mounts (the scoutfs module cannot load here), and a kmsg
trigger. After ``--armed-seconds`` (plus 0-0.5 s of random jitter) the trigger line
is written to /dev/kmsg at time T0; then, from the events file and the archive:

* T0 -> detected      manifest trigger.time
* T0 -> all stopped   max of manifest plugins[*].stopped_at (and detected -> all stopped)
* ftrace events after the trigger line in the archive's ftrace/trace.txt
* packets in the archive's pcap files with a timestamp after T0
* T0 -> durable / finalized / archive   events-file times

Baseline, alternated with our runs, same traffic: the old script's wait loop. A kernel
log follower (``dmesg --follow-new`` into a file; the old script used journalctl -f,
which adds journald's ~250 ms on top), a loop that sleeps 0.5 s and runs ``grep -Eq``
on the file, then turns off ftrace (a private instance with the same events, as
SIGINT to trace-cmd would) and sends SIGINT to a tcpdump started with the old
script's command line (same filter text, -i lo) and waits for it to exit.

``--fill-mb 100`` first fills ~100 MB of the tcpdump ring (file_size_mb 50,
file_count 2) with loopback traffic, to time T0 -> durable with full rings.

Run as root with the project's Python (tools/setup.sh makes .venv-3.11):
    .venv-3.11/bin/python bench/trigger_latency.py [--runs 10] [--fill-mb 100]
Prints a table, writes bench/results/trigger_latency.json. Never fails on a number.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import common as c

from scoutfs_collect.archive.read import read_manifest
from scoutfs_collect.demo import fixture
from scoutfs_collect.system import tracefs

EVENTS = ["sched:sched_switch", "sched:sched_wakeup"]


def trigger_line(nonce: str, port: int) -> str:
    # Deliberately NOT the real fencing text: other runs on this host (default profiles,
    # other people's tests) must not fire on our line. The match is the same work.
    return f"scoutfs-bench: {nonce} fence probe for 127.0.0.1:{port}"


def profile_text(nonce: str, instance: str, buffer_kb: int, sysfs_root: Path) -> str:
    return f"""\
description: bench trigger_latency
settings: {{compression: zstd}}
collectors:
  dmesg: {{}}
  scoutfs-counters: {{sysfs_root: '{sysfs_root}', interval: 1}}
  ftrace:
    instance: {instance}
    events: {EVENTS}
    buffer_size_kb: {buffer_kb}
    freeze_on: ["*{nonce} fence probe*"]
  tcpdump: {{interface: lo, file_size_mb: 50, file_count: 2, heartbeat_timeout: 0}}
triggers:
  fencing: {{type: kmsg, pattern: '{nonce} fence probe'}}
"""


def ring_bytes(tcpdump_dir: Path) -> int:
    return sum(p.stat().st_size for p in tcpdump_dir.glob("tcpdump.pcap*"))


def fill_ring(load: c.UdpLoad, tcpdump_dir: Path, mb: float) -> int:
    """Send what brings the ring to ~98 % of ``mb`` MB, wait until tcpdump has written
    it (growth back to the steady traffic's trickle); ring bytes at the end."""
    load.fill(max(0, int(mb * 1e6 * 0.98) - ring_bytes(tcpdump_dir)))
    last, deadline = ring_bytes(tcpdump_dir), time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = ring_bytes(tcpdump_dir)
        if abs(now - last) < 200_000:
            return now
        last = now
    return last


def missing(load: c.UdpLoad, pcaps: List[Path], capture_start: float, t0: float) -> int:
    """Steady-traffic packets sent while the capture ran, before T0, that are not in the
    pcap files (0.1 s margin after the start, where tcpdump may still be setting up)."""
    first, pkts = capture_start + 0.1, c.pcap_times(pcaps, max_len=1000)
    # max(0, ...): a packet the kernel stamped just before T0 may be send-timed just after it
    return max(0, load.sent_between(first, t0) - sum(1 for t in pkts if first < t <= t0))


def ms(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else (b - a) * 1000


def run_ours(scr: c.Scratch, i: int, args: argparse.Namespace) -> Dict[str, Any]:
    run_dir = scr.dir / f"ours{i}"
    (run_dir / "out").mkdir(parents=True)
    nonce = f"bench{uuid.uuid4().hex[:10]}"
    instance = scr.instance_name("tl")
    load = c.UdpLoad(args.pps).start()
    try:
        prof = run_dir / "profile.yaml"
        sysfs_root = run_dir / "sysfs"
        fixture.build(sysfs_root, mounts=2)  # the module cannot load here: a fixture tree
        prof.write_text(profile_text(nonce, instance, args.buffer_kb, sysfs_root))
        env, events = c.cli_env(run_dir), run_dir / "events.jsonl"
        with open(run_dir / "stdout", "w") as out, open(run_dir / "stderr", "w") as err:
            proc = scr.popen(c.cli_argv("--profile", prof, "--output-dir", run_dir / "out",
                                        "--events-file", events, "127.0.0.1", load.port),
                             death_signal=signal.SIGTERM, env=env, cwd=run_dir, stdout=out, stderr=err)
        workdir = Path(c.wait_event(events, "started", proc)["workdir"])
        c.wait_event(events, "armed", proc)
        filled = fill_ring(load, workdir / "tcpdump", args.fill_mb) if args.fill_mb else None
        time.sleep(args.armed_seconds + random.uniform(0, 0.5))  # a deliberate delay, not a wait
        t0, _ = c.kmsg_write(trigger_line(nonce, load.port))
        proc.wait(300)
    finally:
        load.close()
    ev = {e["event"]: e for e in c.read_events(events)}
    archive = Path(ev["archive"]["path"])
    m = read_manifest(archive)
    top = c.extract(archive, run_dir / "x")
    trig = m["trigger"]["time"]
    stopped = {n: p["stopped_at"] for n, p in m["plugins"].items() if p.get("stopped_at")}
    slowest = max(stopped, key=lambda n: stopped[n])
    ftrace = c.events_after_line(top / "ftrace" / "trace.txt", nonce)
    pcaps = sorted((top / "tcpdump").glob("tcpdump.pcap*"))
    pkts = c.pcap_times(pcaps)
    tcp_det = m["plugins"]["tcpdump"]["details"]
    res = {
        "exit_status": proc.returncode, "t0": t0, "trigger_time": trig,
        "detect_ms": ms(t0, trig), "all_stopped_ms": ms(t0, stopped[slowest]),
        "detect_to_stopped_ms": ms(trig, stopped[slowest]), "slowest": slowest,
        "stop_ms_by_plugin": {n: ms(trig, t) for n, t in stopped.items()},
        "tcpdump_stop_seconds": tcp_det.get("stop_seconds"),
        "ftrace_freeze_mode": m["plugins"]["ftrace"]["details"].get("freeze_mode"),
        "ftrace_after_trigger": ftrace["after_by_time"], "ftrace": ftrace,
        "packets": len(pkts), "packets_after_t0": sum(1 for t in pkts if t > t0),
        "packets_missing_before_t0": missing(load, pcaps, tcp_det["started"], t0),
        "packets_dropped_by_kernel": tcp_det.get("packets_dropped_by_kernel"),
        "ring_bytes_at_t0": filled,
        "durable_ms": ms(t0, ev.get("durable", {}).get("time")),
        "finalized_ms": ms(t0, ev.get("finalized", {}).get("time")),
        "archive_ms": ms(t0, ev["archive"]["time"]),
        "ftrace_finalize_s": m["plugins"]["ftrace"]["phases"].get("finalize"),
    }
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return res


def old_tcpdump_argv(port: int, pcap: Path) -> List[str]:
    """The old script's command (its filter text, unparenthesized), on lo."""
    return ["tcpdump", "-p", "-i", "lo", "host", "127.0.0.1", "and", "tcp", "port", str(port),
            "or", "udp", "port", str(port), "-w", str(pcap), "-W", "2", "-C", "50", "-Z", "root"]


def run_baseline(scr: c.Scratch, i: int, args: argparse.Namespace) -> Dict[str, Any]:
    run_dir = scr.dir / f"old{i}"
    run_dir.mkdir(parents=True)
    nonce = f"bench{uuid.uuid4().hex[:10]}"
    inst = tracefs.TraceInstance(scr.instance_name("old"))
    load = c.UdpLoad(args.pps).start()
    res: Dict[str, Any] = {}
    stop = threading.Event()
    try:
        inst.create()
        inst.set_buffer_size_kb(args.buffer_kb)
        inst.use_epoch_clock()
        inst.enable_events(EVENTS + ["printk:console"])
        inst.tracing_on = True
        with open(run_dir / "tcpdump.stderr", "w") as err:
            td = scr.popen(old_tcpdump_argv(load.port, run_dir / "tcpdump.pcap"), stderr=err)
        deadline = time.monotonic() + 10
        while "listening on" not in (run_dir / "tcpdump.stderr").read_text():
            if time.monotonic() > deadline or td.poll() is not None:
                raise RuntimeError("old-style tcpdump did not start")
            time.sleep(0.005)
        listening = time.time()
        log = run_dir / "kern.log"
        with open(log, "w") as out:
            follower = scr.popen(["dmesg", "--follow-new"], stdout=out)
        pattern = f"{nonce} fence probe"

        def wait_loop() -> None:
            while not stop.is_set():
                time.sleep(0.5)  # the old script's poll period
                if subprocess.run(["grep", "-Eq", pattern, str(log)]).returncode == 0:
                    res["detected"] = time.time()
                    inst.tracing_on = False  # as SIGINT to trace-cmd, "immediately"
                    td.send_signal(signal.SIGINT)
                    res["sigint"] = time.time()
                    res["exited"] = c.pidfd_wait(td.pid, 10)
                    return

        waiter = threading.Thread(target=wait_loop, name="old-wait", daemon=True)
        waiter.start()
        time.sleep(args.armed_seconds + random.uniform(0, 0.5))
        t0, _ = c.kmsg_write(trigger_line(nonce, load.port))
        waiter.join(15)
        td.wait(10)
        follower.terminate()
        follower.wait(10)
        inst.read_trace(run_dir / "trace.txt")
        ftrace = c.events_after_line(run_dir / "trace.txt", nonce)
    finally:
        stop.set()
        load.close()
        if inst.exists():
            inst.remove()
    pcaps = sorted(run_dir.glob("tcpdump.pcap*"))
    pkts = c.pcap_times(pcaps)
    stopped = res.get("exited")
    out = {
        "t0": t0, "detect_ms": ms(t0, res.get("detected")), "all_stopped_ms": ms(t0, stopped),
        "detect_to_stopped_ms": ms(res.get("detected"), stopped), "slowest": "tcpdump",
        "tcpdump_sigint_to_exit_ms": ms(res.get("sigint"), stopped),
        "ftrace_after_trigger": ftrace["after_by_time"], "ftrace": ftrace,
        "packets": len(pkts), "packets_after_t0": sum(1 for t in pkts if t > t0),
        "packets_missing_before_t0": missing(load, pcaps, listening, t0),
        "packets_sent_t0_to_stop": load.sent_between(t0, stopped or t0),
    }
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return out


ROWS = [  # (label, key, goal text, goal check)
    ("T0 -> trigger detected (ms)", "detect_ms", "", None),
    ("T0 -> all collectors stopped (ms)", "all_stopped_ms", "", None),
    ("detected -> all stopped (ms)", "detect_to_stopped_ms", "< 10", lambda v: v < 10),
    ("ftrace events after trigger line", "ftrace_after_trigger", "0", lambda v: v == 0),
    ("packets in pcap after T0", "packets_after_t0", "", None),
    ("packets sent before T0 not in pcap", "packets_missing_before_t0", "0", lambda v: v == 0),
    ("T0 -> raw data fsynced (ms)", "durable_ms", "< 1000", lambda v: v < 1000),
    ("T0 -> finalized (ms)", "finalized_ms", "", None),
    ("T0 -> archive complete (ms)", "archive_ms", "", None),
]


def summary(ours: List[Dict[str, Any]], old: List[Dict[str, Any]]) -> List[List[Any]]:
    rows = []
    for label, key, goal, check in ROWS:
        vals = [r[key] for r in ours if r.get(key) is not None]
        mo, mb = c.median(vals), c.median(r.get(key) for r in old)
        span = f"{min(vals):.1f}-{max(vals):.1f}" if vals else "-"
        if check and vals:
            goal = f"{goal}: {'met' if check(mo) else 'MISSED'} ({sum(map(check, vals))}/{len(vals)} runs)"
        rows.append([label, mo, span, mb, c.ratio(mb, mo), goal])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="runs of each kind (default 10)")
    ap.add_argument("--armed-seconds", type=float, default=1.0, help="armed time before T0 (default 1)")
    ap.add_argument("--pps", type=float, default=500, help="UDP packets/s to the port (default 500)")
    ap.add_argument("--buffer-kb", type=int, default=1024, help="ftrace KiB per CPU (default 1024)")
    ap.add_argument("--fill-mb", type=float, default=0,
                    help="fill this many MB of the tcpdump ring before T0 (e.g. 100; default 0)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the old-script baseline")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (archives, logs)")
    args = ap.parse_args()
    c.require_root()
    ours: List[Dict[str, Any]] = []
    old: List[Dict[str, Any]] = []
    errors: List[str] = []
    began = time.monotonic()
    with c.Scratch("trigger", keep=args.keep) as scr:
        for i in range(args.runs):
            for kind, fn, into in (("ours", run_ours, ours), ("old", run_baseline, old)):
                if kind == "old" and args.no_baseline:
                    continue
                try:
                    into.append(fn(scr, i, args))
                    print(f"run {i + 1}/{args.runs} {kind}: detected {c.fmt(into[-1]['detect_ms'])} ms, "
                          f"stopped {c.fmt(into[-1]['all_stopped_ms'])} ms", flush=True)
                except Exception as exc:  # a broken run is reported, the others still count
                    errors.append(f"run {i + 1} {kind}: {type(exc).__name__}: {exc}")
                    print(errors[-1], flush=True)
    if not ours:
        sys.exit("no successful run: " + "; ".join(errors))
    rows = summary(ours, old)
    print()
    failed = f" ({len(errors)} FAILED)" if errors else ""
    print(f"trigger latency: {len(ours)} runs{failed}, {args.pps:g} UDP pkt/s, ftrace {EVENTS} "
          f"{args.buffer_kb} KiB/CPU, fill {args.fill_mb:g} MB, {time.monotonic() - began:.0f} s")
    print(c.table(["metric", "ours median", "ours min-max", "old-script median", "old/ours", "goal"], rows))
    slow = [r["slowest"] for r in ours]
    print("slowest to stop (ours): " + ", ".join(f"{n} x{slow.count(n)}" for n in sorted(set(slow)))
          + "; median ms from detection: " + ", ".join(
              f"{n} {c.fmt(c.median(r['stop_ms_by_plugin'].get(n) for r in ours))}"
              for n in sorted(ours[0]["stop_ms_by_plugin"])))
    print("tcpdump stop() seconds (ours, median): "
          f"{c.fmt(c.median(r['tcpdump_stop_seconds'] for r in ours), 4)}; old tcpdump SIGINT->exit "
          f"(pidfd, median ms): {c.fmt(c.median(r.get('tcpdump_sigint_to_exit_ms') for r in old))}")
    if args.fill_mb:
        print(f"tcpdump ring at T0 (median MB): {c.fmt(c.median(r['ring_bytes_at_t0'] for r in ours) / 1e6)}")
    keys = ["metric", "ours_median", "ours_range", "old_median", "old_over_ours", "goal"]
    c.write_results("trigger_latency", {
        "options": vars(args), "summary": [dict(zip(keys, r)) for r in rows],
        "ours": ours, "old_script": old, "errors": errors})


if __name__ == "__main__":
    c.run(main)
