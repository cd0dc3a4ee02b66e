"""Analyzer ``kernel``: kernel log lines that explain a node that stopped answering."""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Tuple

from scoutfs_collect import Analyzer, Evidence, Finding, Record, hookimpl

#: (key, severity, category, pattern, summary) -- the formats of the kernel sources
RULES: Tuple[Tuple[str, str, str, re.Pattern[str], str], ...] = (
    # kernel/hung_task.c: "INFO: task %s:%d blocked for more than %ld seconds."
    ("kernel.hung_task", "error", "node-stall",
     re.compile(r"INFO: task (?P<what>\S+:\d+) blocked for more than (?P<n>\d+) seconds"),
     "hung task {what} (blocked for more than {n} s)"),
    # kernel/watchdog.c (pr_fmt "watchdog: "): "BUG: soft lockup - CPU#%d stuck for %us! [%s:%d]"
    ("kernel.soft_lockup", "error", "node-stall",
     re.compile(r"BUG: soft lockup - CPU#(?P<what>\d+) stuck for (?P<n>\d+)s!"),
     "soft lockup: CPU#{what} stuck for {n} s"),
    # kernel/rcu/tree_stall.h (pr_fmt "rcu: "): "INFO: %s self-detected stall on CPU",
    # "INFO: %s detected stalls on CPUs/tasks:" (%s: rcu_sched, rcu_preempt, ...)
    ("kernel.rcu_stall", "error", "node-stall",
     re.compile(r"INFO: (?P<what>rcu_\w+) (?:self-detected stall on CPU|detected stalls)"),
     "RCU stall ({what})"),
    # mm/oom_kill.c: "%s: Killed process %d (%s) total-vm:..." (%s: "Out of memory", or the
    # memory cgroup's)
    ("kernel.oom_kill", "error", "memory",
     re.compile(r"(?:Out of memory|out of memory): Killed process (?P<what>\d+ \([^)]*\))"),
     "OOM killer killed process {what}"),
    # net/sched/sch_generic.c dev_watchdog(): "NETDEV WATCHDOG: %s (%s): transmit queue %u
    # timed out" (newer: "NETDEV WATCHDOG: CPU: %d: transmit queue %u timed out %u ms")
    ("kernel.netdev_watchdog", "error", "network",
     re.compile(r"NETDEV WATCHDOG: (?P<what>.*?):? transmit queue \d+ timed out"),
     "NETDEV WATCHDOG: transmit queue timed out ({what})"),
    # drivers/net/phy/phy.c phy_print_status(): "Link is Down"; e1000e/igb/ixgbe/i40e:
    # "NIC Link is Down"
    ("kernel.link_down", "warning", "network",
     re.compile(r"(?P<what>\S+): (?:NIC )?Link is Down"), "link down on {what}"),
    ("kernel.link_up", "info", "network",
     re.compile(r"(?P<what>\S+): (?:NIC )?Link is Up"), "link up on {what}"),
    # drivers/net/bonding/bond_main.c: "making interface %s the new active one",
    # "link status definitely down for interface %s, disabling it"
    ("kernel.bond_failover", "warning", "network",
     re.compile(r"(?P<what>\S+): (?:making interface \S+ the new active one|link status definitely "
                r"down for interface \S+)"), "bonding failover on {what}"),
    # block/blk-mq.c blk_print_req_error(): "%s error, dev %s, sector %llu op ..." (%s: "I/O");
    # older block/blk-core.c: "blk_update_request: I/O error, dev %s, sector %llu"
    ("kernel.io_error", "warning", "node-stall",
     re.compile(r"I/O error, dev (?P<what>[^,\s]+)"), "block I/O error on {what}"),
    # scoutfs (kmod/src/msg.h): "scoutfs f.%06x.r.%06x error: ..." and "... warning: ..."
    ("kernel.scoutfs_error", "warning", "fence",
     re.compile(r"scoutfs (?P<what>f\.[0-9a-f]+\.r\.[0-9a-f]+) error: (?!.*fencing)"),
     "scoutfs error ({what})"),
    ("kernel.scoutfs_warning", "info", "fence",
     re.compile(r"scoutfs (?P<what>f\.[0-9a-f]+\.r\.[0-9a-f]+) warning: "), "scoutfs warning ({what})"),
)
QUICK = ("INFO: task", "soft lockup", "rcu", "Killed process", "NETDEV WATCHDOG", "Link is",
         "new active one", "definitely down", "I/O error", "scoutfs")
EVIDENCE = 3  # lines kept per key and node


class Kernel(Analyzer):
    """Kernel log lines logged before the trigger that explain a stalled or cut-off
    node, in the formats of the kernel sources: hung tasks (kernel/hung_task.c), soft
    lockups (kernel/watchdog.c), RCU stalls (kernel/rcu/tree_stall.h), OOM kills
    (mm/oom_kill.c), NETDEV WATCHDOG transmit timeouts (net/sched/sch_generic.c), link
    down/up (drivers/net/phy/phy.c and the NIC drivers), bonding failovers
    (drivers/net/bonding/bond_main.c), block I/O errors (block/blk-mq.c) and scoutfs's
    own `error:`/`warning:` lines (its fencing lines are the fence analyzer's). Only
    lines logged while the recorder ran (the ring read at start may be days old). One
    finding per kind and node: the first such line, with how many there were."""

    type_name = "kernel"
    sources = ("kmsg",)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.seen: Dict[Tuple[str, str], List[Record]] = {}
        self.counts: Dict[Tuple[str, str], int] = {}
        self.first: Dict[Tuple[str, str], re.Match[str]] = {}
        self.start: Dict[str, float] = {}

    def record(self, rec: Record) -> None:
        text = rec.text
        if rec.time > self.ctx.trigger or not any(q in text for q in QUICK):
            return
        if rec.node not in self.start:
            self.start[rec.node] = self.ctx.started(rec.node) or float("-inf")
        if rec.time < self.start[rec.node]:
            return
        for key, _sev, _cat, pattern, _summary in RULES:
            m = pattern.search(text)
            if m is None:
                continue
            k = (key, rec.node)
            kept = self.seen.setdefault(k, [])
            self.counts[k] = self.counts.get(k, 0) + 1
            if k not in self.first or rec.time < kept[0].time:
                self.first[k] = m
            kept.append(rec)
            kept.sort(key=lambda r: r.time)
            del kept[EVIDENCE:]
            return

    def finish(self) -> Iterable[Finding]:
        rules = {r[0]: r for r in RULES}
        for (key, node), kept in self.seen.items():
            _, severity, category, _, summary = rules[key]
            count = self.counts[(key, node)]
            text = summary.format(**self.first[(key, node)].groupdict())
            if count > 1:
                text += f", {count} such lines before the trigger"
            yield Finding(key, severity, category, text, node, kept[0].time,
                          tuple(Evidence(r.source, r.time, r.text) for r in kept), {"count": count})


@hookimpl
def scoutfs_collect_register(register):
    register.add_analyzer(Kernel)
