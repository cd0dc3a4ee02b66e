"""The analyzers' packets: every captured frame of a real tcpdump ring that wrapped (its
files are in the archive in name order, the newest first), handed over in capture order.

A real capture on lo: a TCP conversation on the cluster port with scoutfs's socket
options (each message after the answer to the one before) and a 10 Hz UDP heartbeat
both ways on the same port, recorded by tcpdump in a ring of 1 MB files that wraps, then
a kmsg trigger. Read out of order, the TCP analysis would see sequence numbers go back
by megabytes at each file: hundreds of false retransmissions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from scoutfs_collect.archive.read import read_manifest
from tests.support import tshark
from tests.support.cli import Cli, finish
from tests.support.helpers import archive_of, extract, kmsg_write, unique, wait_for
from tests.support.loopback_talk import LoopbackTalk


def test_a_wrapped_ring_is_analysed_in_capture_order(tmp_path):
    cli = Cli(tmp_path)
    talk = LoopbackTalk()
    end = unique("sfc-test-ring-end")
    profile = cli.profile("collectors:\n  tcpdump: {interface: lo, file_size_mb: 1, file_count: 3}\n"
                          f"  dmesg: {{}}\ntriggers:\n  end: {{type: kmsg, pattern: '{end}'}}\n")
    try:
        proc = cli.start("--profile", str(profile), "--output-dir", str(cli.out), "--events-file",
                         str(cli.events), "127.0.0.1", str(talk.port))
        cli.wait_event("armed", proc)
        files: List[Path] = []

        def wrapped() -> bool:  # pcap0 written again after pcap2 began: the ring wrapped
            talk.messages(200)
            files[:] = sorted(cli.out.glob("scoutfs-collect.*/tcpdump/tcpdump.pcap[0-9]"))
            return len(files) == 3 and files[0].stat().st_mtime > files[2].stat().st_mtime + 0.05 \
                and files[0].stat().st_size > 300_000
        wait_for(wrapped, 120, "the ring to wrap")
        kmsg_write(end)
        code, out, err = finish(proc)
        assert code == 0, err
    finally:
        talk.close()
        cli.cleanup()
    archive = Path(archive_of(out))
    order = read_manifest(archive)["plugins"]["tcpdump"]["details"]["files_in_order"]
    assert order[0] != "tcpdump.pcap0", order  # the archive's first file is not the oldest
    result = cli.run("inspect", str(archive), "--findings", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    keys = {f["key"] for f in doc["findings"]}
    assert not keys & {"tcp.retransmission", "tcp.duplicate_ack", "tcp.zero_window", "tcp.silence"}, keys
    (conn,) = [f for f in doc["findings"] if f["key"] == "tcp.connection"]
    top = extract(archive, tmp_path / "x")
    pcaps = [top / "tcpdump" / name for name in order]
    counts: Dict[str, int] = {}
    for p in pcaps:
        for sender, n in tshark.count(p, f"tcp.port == {talk.port}").items():
            counts[sender] = counts.get(sender, 0) + n
    assert {s["src"]: s["segments"] for s in conn["details"]["sides"]} == counts
    # tshark on the files merged in capture order flags nothing either
    merged = tmp_path / "merged.pcap"
    raw = [p.read_bytes() for p in pcaps]
    merged.write_bytes(raw[0] + b"".join(r[24:] for r in raw[1:]))
    assert not tshark.count(merged, f"tcp.port == {talk.port} && tcp.analysis.retransmission")
