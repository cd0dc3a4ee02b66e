"""Analyzer ``fence``: the fencing lines of scoutfs (public sources, kmod/src)."""

from __future__ import annotations

import re
from typing import Iterable, List, Optional, Tuple

from scoutfs_collect import Analyzer, Evidence, Finding, NodeInfo, Record, hookimpl

IPV4 = r"(?P<ip>\d{1,3}(?:\.\d{1,3}){3})"
#: (path = sysfs fence ``reason``, the line's pattern)
PATHS: Tuple[Tuple[str, re.Pattern[str]], ...] = (
    # net.c: "client "SIN_FMT" reconnect timed out, fencing"
    ("client_reconnect", re.compile(rf"client {IPV4}:(?P<port>\d+) (?:.* )?reconnect timed out, fencing")),
    # server.c: "%lu ms recovery timeout expired for client rid %016llx, fencing"
    ("client_recovery", re.compile(r"(?P<ms>\d+) ms recovery timeout expired for client rid "
                                   r"(?P<rid>[0-9a-f]{16}), fencing")),
    # quorum.c: "fencing previous leader "SCSBF" at term %llu in slot %u with address "SIN_FMT
    ("quorum_block_leader", re.compile(rf"fencing previous leader f\.[0-9a-f]+\.r\.(?P<rid>[0-9a-f]+)"
                                       rf"(?: at term \d+)? in slot (?P<slot>\d+) with address "
                                       rf"{IPV4}:(?P<port>\d+)")),
)
LOGGER = re.compile(r"scoutfs f\.[0-9a-f]+\.r\.(?P<rid>[0-9a-f]+)")
LOOPBACK = ("127.", "::1")


class Fence(Analyzer):
    """Which of scoutfs's three fence paths fired, on which node, when, and whom it fences.

    Reads the kernel log for the fencing lines of the public scoutfs sources:
    `client A:P reconnect timed out, fencing` (net.c; path client_reconnect: the
    client's connection stayed down for the reconnect timeout), `%lu ms recovery
    timeout expired for client rid %016llx, fencing` (server.c; client_recovery: a
    client did not finish lock recovery with a new server) and `fencing previous leader
    f.X.r.Y at term T in slot S with address A:P` (quorum.c; quorum_block_leader).
    Lines logged while the recorder ran. One finding `fence.<path>` per line: the
    victim's address or rid, the node that logged it, and which node of a bundle is the
    victim (the one node with that address in its sysinfo, loopback aside, or the one
    whose own scoutfs lines carry that rid)."""

    type_name = "fence"
    sources = ("kmsg",)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.hits: List[Tuple[str, Record, re.Match[str]]] = []
        self.rids: List[Tuple[str, str]] = []  # (node, rid prefix of its own scoutfs lines)

    def record(self, rec: Record) -> None:
        text = rec.text
        if "fencing" not in text and "scoutfs" not in text:
            return
        m = LOGGER.search(text)
        if m and (rec.node, m.group("rid")) not in self.rids:
            self.rids.append((rec.node, m.group("rid")))
        if "fencing" not in text or rec.time < (self.ctx.started(rec.node) or float("-inf")):
            return  # lines before the recorder started are the ring read at start: not this incident
        for path, pattern in PATHS:
            found = pattern.search(text)
            if found:
                self.hits.append((path, rec, found))
                return

    def finish(self) -> Iterable[Finding]:
        for path, rec, m in self.hits:
            groups = m.groupdict()
            ip = groups.get("ip")
            rid = groups.get("rid")
            victim = self._by_address(ip) if ip else None
            if victim is None and rid:
                victim = self._by_rid(rid)
            who = f"{ip}:{groups['port']}" if ip else f"rid {rid}"
            details = {"path": path, "victim": who, "victim_ip": ip, "victim_rid": rid,
                       "logged_by": rec.node, "victim_node": victim.name if victim else None}
            if groups.get("ms"):
                details["timeout_ms"] = int(groups["ms"])
            where = f" ({victim.name})" if victim is not None else ""
            yield Finding(f"fence.{path}", "error", "fence",
                          f"{rec.node} fenced {who}{where}: {path.replace('_', ' ')}",
                          rec.node, rec.time, (Evidence(rec.source, rec.time, rec.text),), details)

    def _by_address(self, ip: str) -> Optional[NodeInfo]:
        if self.ctx.bundle and ip.startswith(LOOPBACK):
            return None  # every node of a bundle has lo
        return self.ctx.node_of_address(ip)

    def _by_rid(self, rid: str) -> Optional[NodeInfo]:
        """The one node whose own scoutfs lines carry this rid (``r.%06x``: its first digits)."""
        nodes = {n for n, own in self.rids if rid.startswith(own) or own.startswith(rid)}
        if len(nodes) == 1:
            return self.ctx.node(nodes.pop())
        return None


@hookimpl
def scoutfs_collect_register(register):
    register.add_analyzer(Fence)
