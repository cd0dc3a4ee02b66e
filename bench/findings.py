"""Benchmark: ``inspect --findings`` and ``report`` over a large archive (default ~1 GB of
pcap), against ``tshark -r FILE -q -z expert`` of the same pcap files, in the same run.

1. A real capture through the CLI: dmesg, sysinfo and tcpdump on lo (a ring of 50 MB
   files, one more than --pcap-mb needs, so it wraps and the archive holds its files
   out of time order) of a scoutfs-like conversation on the cluster port: a TCP client
   writing --msg-bytes messages with scoutfs's socket options
   (TCP_NODELAY, keepalive, TCP_USER_TIMEOUT), each after the server's 20-byte answer
   to the one before (so every message is a segment of its own), and a 10 Hz UDP
   heartbeat both ways on the same port; then a fencing line (kmsg trigger).
2. Alternating runs (default 1) of each command, output to /dev/null: wall time, CPU time
   and peak RSS (bench/timeline.py's measure). Ours reads the compressed archive as it
   is; tshark reads the extracted pcap files (extraction not counted), one after the
   other (the sum is the baseline).

With ``--archive PATH`` step 1 is skipped and that archive is measured instead (the
issue's figure is over the 1.1 GB archive of ``timeline.py --pcap-mb 1000 --keep``: UDP
datagrams of 1400 bytes, where this bench's own capture is a TCP conversation of small
messages, 3.5x the frames for the same bytes).

Prints a table and writes bench/results/findings.json. It records numbers, it never
fails on one. Run as root with the project's Python (tools/setup.sh makes .venv-3.11):
    .venv-3.11/bin/python bench/findings.py [--pcap-mb 1000] [--runs 1] [--keep] [--archive PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict

import common as c
from timeline import medians

from tests.support.loopback_talk import LoopbackTalk


def capture(scratch: c.Scratch, env: Dict[str, str], pcap_mb: int, msg_bytes: int) -> Path:
    conv = LoopbackTalk()
    scratch.cleanups.append(conv.close)
    tag = f"scoutfs-bench-findings-{os.getpid()}"
    files = -(-pcap_mb // 50) + 1
    profile = scratch.dir / "p.yaml"
    profile.write_text(f"""\
collectors:
  dmesg: {{}}
  sysinfo: {{}}
  tcpdump: {{interface: lo, heartbeat_timeout: 0, file_size_mb: 50, file_count: {files}}}
triggers:
  fencing: {{type: kmsg, pattern: '{tag}: client 127.0.0.9:40000 reconnect timed out, fencing'}}
""")
    # pcap bytes per payload byte: 82 bytes of headers (pcap, Ethernet, IP, TCP with
    # timestamps) per message and per reply
    overhead = (msg_bytes + 82 + 20 + 82) / msg_bytes

    def load() -> str:
        sent = conv.fill(int(pcap_mb * 1.08e6 / overhead), msg_bytes)
        return f"{sent / 1e6:.0f} MB of messages sent"

    return c.capture_archive(scratch, env, profile, conv.port, load,
                             f"{tag}: client 127.0.0.9:40000 reconnect timed out, fencing", 1800)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--pcap-mb", type=int, default=1000, help="MB of pcap the archive keeps (default 1000)")
    ap.add_argument("--msg-bytes", type=int, default=1000, help="bytes of one TCP message (default 1000)")
    ap.add_argument("--archive", type=Path, help="measure this archive instead of capturing one")
    args = ap.parse_args()
    c.require_root()
    with c.Scratch("findings", keep=args.keep) as scratch:
        env = c.cli_env(scratch.dir)
        if args.archive:
            archive = args.archive.resolve()
        else:
            archive = capture(scratch, env, args.pcap_mb, args.msg_bytes)
        top = c.extract(archive, scratch.dir / "x")
        pcaps = sorted((top / "tcpdump").glob("tcpdump.pcap[0-9]*"))
        packets = sum(1 for p in pcaps for _ in c.PcapReader(p))
        commands = {
            "inspect --findings": c.cli_argv("inspect", archive, "--findings"),
            "report": c.cli_argv("report", archive, "-o", scratch.dir / "report.html"),
        }
        for p in pcaps:
            commands[f"tshark -z expert {p.name}"] = ["tshark", "-n", "-r", str(p), "-q", "-z", "expert"]
        med, results = medians(commands, args.runs, env, scratch.dir)
        tshark = [k for k in med if k.startswith("tshark")]
        base_wall = sum(med[k]["wall_s"] for k in tshark)
        base_cpu = sum(med[k]["cpu_s"] for k in tshark)
        base_rss = max(med[k]["tree_rss_mb"] for k in tshark)
        ours = med["inspect --findings"]
        rows = [[k, v["wall_s"], v["cpu_s"], v["tree_rss_mb"], v["maxrss_mb"]] for k, v in med.items()
                if not k.startswith("tshark")]
        rows.append([f"tshark -z expert, {len(tshark)} files (sum; max RSS)", base_wall, base_cpu,
                     base_rss, None])
        pcap_mb = sum(p.stat().st_size for p in pcaps) / 1e6
        print(f"archive {archive.stat().st_size / 1e6:.0f} MB, {pcap_mb:.0f} MB of pcap in "
              f"{len(pcaps)} files, {packets} packets")
        print(c.table([f"command (median of {args.runs})", "wall s", "CPU s", "tree RSS MB", "max RSS MB"],
                      rows))
        print(f"inspect --findings / tshark: {c.fmt(c.ratio(ours['wall_s'], base_wall), 2)}x wall, "
              f"{c.fmt(c.ratio(ours['cpu_s'], base_cpu), 2)}x CPU (goal <= 0.5), RSS "
              f"{c.fmt(ours['tree_rss_mb'])} MB (goal < 150); report {c.fmt(med['report']['wall_s'], 2)} s "
              f"(goal < 10); load average {os.getloadavg()[0]:.1f}")
        c.write_results("findings", {
            "archive_mb": archive.stat().st_size / 1e6, "pcap_mb": pcap_mb, "pcap_files": len(pcaps),
            "packets": packets, "median": med, "tshark_wall_s": base_wall, "tshark_cpu_s": base_cpu,
            "ratio": c.ratio(ours["wall_s"], base_wall), "cpu_ratio": c.ratio(ours["cpu_s"], base_cpu),
            "load_average": os.getloadavg(), "runs": results,
        })


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    c.run(main)
