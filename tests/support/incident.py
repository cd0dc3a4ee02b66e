"""Real incidents between two namespace test hosts (tests/support/conversation.py) recorded
by the real ``scoutfs-collect`` on each host, for the analyzers and the verdict.

:class:`Recorder` runs ``python -m scoutfs_collect`` inside one host (``nsenter --net``)
with its own lock and config dirs (:class:`tests.support.cli.Cli`): dmesg, sysinfo (its
addresses are the host's: how the fence analyzer finds the victim) and tcpdump on the
conversation's cluster port, ending on a kmsg pattern (the fencing line the test writes:
the hosts share one kernel log, so both recorders stop on it). :func:`bundle` packs
their archives as ``scoutfs-collect cluster`` would (cluster.json, one archive per node).
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Dict, Optional

from scoutfs_collect.archive.read import read_manifest
from tests.support.cli import Cli, finish
from tests.support.conversation import PORT, Conversation
from tests.support.helpers import archive_of
from tests.support.netpair import NetHost, NetPair


class Recorder:
    """scoutfs-collect recording on ``host`` against the conversation's server (``target``),
    until a kernel log line matches ``pattern``."""

    def __init__(self, net: NetPair, host: NetHost, tmp: Path, target: NetHost, pattern: str) -> None:
        self.host = host
        (tmp / host.name).mkdir()
        self.cli = Cli(tmp / host.name)
        profile = self.cli.profile(
            "collectors:\n  dmesg: {}\n  sysinfo: {}\n  tcpdump: {interface: any}\n"
            f"triggers:\n  fencing: {{type: kmsg, pattern: '{pattern}'}}\n")
        argv = self.cli.argv("--profile", str(profile), "--output-dir", str(self.cli.out),
                             "--events-file", str(self.cli.events), target.address, str(PORT))
        self.proc = net.start(host, argv, env=self.cli.env, cwd=self.cli.tmp, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        self.cli.wait_event("armed", self.proc)

    def pcap(self) -> Optional[Path]:
        """The ring's first file while it records (the run's work dir)."""
        return next(self.cli.out.glob("scoutfs-collect.*/tcpdump/tcpdump.pcap0"), None)

    def finish(self) -> Path:
        """The archive, once the trigger ended the run."""
        code, out, err = finish(self.proc)
        assert code == 0, err
        return Path(archive_of(out))


def client_port(conv: Conversation) -> int:
    """The client's (``a``'s) port of the conversation's connection."""
    m = re.search(rf"{re.escape(conv.net.a.address)}:(\d+)\s+{re.escape(conv.net.b.address)}:{PORT}",
                  conv.ss(conv.net.a))
    assert m, conv.ss(conv.net.a)
    return int(m.group(1))


def bundle(tmp: Path, archives: Dict[str, Path], origin: str) -> Path:
    """A cluster bundle in ``scoutfs-collect cluster``'s format of these nodes' archives
    (one kernel, one clock: every clock offset 0), ``origin`` the node whose trigger
    stopped the others."""
    top = "scoutfs-collect-cluster.20261206-000000Z"
    nodes = {}
    manifests = {n: read_manifest(a) for n, a in archives.items()}
    for node, archive in archives.items():
        m = manifests[node]
        nodes[node] = {"status": "ok", "exit": 0, "archive": f"nodes/{node}/{archive.name}", "sha256": "",
                       "trigger": dict(m["trigger"]) if node == origin else None,
                       "stopped": m["times"]["stopped"], "stop_lag_ms": 0.0, "clock_offset_ms": 0.0,
                       "error": None}
    trig = manifests[origin]["trigger"]
    doc = {"format": 1, "nodeset": ",".join(nodes), "nodes": nodes,
           "origin": {"node": origin, "name": trig["name"], "type": trig["type"], "reason": trig["reason"],
                      "time": trig["time"]}}
    (tmp / "cluster.json").write_text(json.dumps(doc))
    path = tmp / f"{top}.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(tmp / "cluster.json", f"{top}/cluster.json")
        for node, archive in archives.items():
            tar.add(archive, f"{top}/nodes/{node}/{archive.name}")
    return path
