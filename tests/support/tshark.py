"""What tshark's TCP expert analysis counts in a pcap, per sending endpoint: the reference
the tcp analysis is checked against (Debian's tshark, run as a plain reader)."""

from __future__ import annotations

import collections
import subprocess
from pathlib import Path
from typing import Counter, Dict

#: Our Direction field -> tshark's display filter for the same thing.
FILTERS = {
    "retransmissions": "tcp.analysis.retransmission",
    "fast_retransmissions": "tcp.analysis.fast_retransmission",
    "spurious_retransmissions": "tcp.analysis.spurious_retransmission",
    "out_of_order": "tcp.analysis.out_of_order",
    "lost_segments": "tcp.analysis.lost_segment",
    "zero_windows": "tcp.analysis.zero_window",
    "duplicate_acks": "tcp.analysis.duplicate_ack",
    "keepalives": "tcp.analysis.keep_alive",
    "resets": "tcp.flags.reset == 1",
    "fins": "tcp.flags.fin == 1",
}


def count(pcap: Path, display_filter: str) -> Counter[str]:
    """Packets matching ``display_filter``, by sender ``ip:port``."""
    done = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-Y", display_filter, "-T", "fields",
         "-e", "ip.src", "-e", "tcp.srcport"], capture_output=True, text=True, timeout=120)
    out: Counter[str] = collections.Counter()
    for line in done.stdout.splitlines():
        ip, _, port = line.partition("\t")
        if ip and port:
            out[f"{ip}:{port}"] += 1
    return out


def expert(pcap: Path, port: int) -> Dict[str, Counter[str]]:
    """Each of FILTERS on the TCP port ``port``: field -> sender -> count."""
    return {field: count(pcap, f"tcp.port == {port} && ({expr})") for field, expr in FILTERS.items()}
