"""The verdict of ``inspect --findings``: which category most likely explains the fence,
and the findings that support it, or ``undetermined`` with the data that was missing.

The rules, in order (the first that holds wins); each looks at the findings of the
fence's *victim* (the node the fencing line names) from before the fence:

=============  ===================================================================
category       the victim's own data shows, before the fence
=============  ===================================================================
node-stall     a hung task, a soft lockup or an RCU stall in its kernel log
memory         an OOM kill in its kernel log, or low MemAvailable in its sysinfo
network        a NETDEV WATCHDOG timeout, a link down or a bonding failover
lock           scoutfs lock counters moving far faster than before
=============  ===================================================================

No fencing line anywhere: ``undetermined``, nothing to explain. No archive from the
victim, or nothing of the above in it: ``undetermined``, naming what was missing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

from scoutfs_collect.plugin.finding import AnalysisContext, Finding, NodeInfo

UNDETERMINED = "undetermined"

#: (category, the finding keys that support it, why in one line)
RULES: Sequence[Tuple[str, Tuple[str, ...], str]] = (
    ("node-stall", ("kernel.hung_task", "kernel.soft_lockup", "kernel.rcu_stall"),
     "the victim's kernel reports a stall before the fence: it stopped answering, not the network"),
    ("memory", ("kernel.oom_kill", "memory.low"),
     "the victim was out of memory before the fence"),
    ("network", ("kernel.netdev_watchdog", "kernel.link_down", "kernel.bond_failover"),
     "the victim's network interface failed before the fence"),
    ("lock", ("counters.lock",),
     "scoutfs lock traffic on the victim stood out before the fence"),
)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """``category`` (one of the finding categories, or ``undetermined``), the ``keys`` of
    the findings that support it, a one-line ``summary``, and for ``undetermined``
    what data was ``missing``."""

    category: str
    keys: Tuple[str, ...]
    summary: str
    missing: Tuple[str, ...] = ()

    def as_dict(self) -> Dict[str, Any]:
        return {"category": self.category, "keys": list(self.keys), "summary": self.summary,
                "missing": list(self.missing)}


def decide(findings: List[Finding], ctx: AnalysisContext) -> Verdict:
    """The verdict over all findings of an archive or bundle."""
    fences = [f for f in findings if f.category == "fence" and f.time is not None]
    if not fences:
        return Verdict(UNDETERMINED, (), "no fence recorded: nothing to explain",
                       ("no fencing line in any kernel log (no incident in this capture)",))
    fence = min(fences, key=lambda f: f.time or 0.0)
    victim = _victim(fence, ctx)
    who = fence.details.get("victim") or "the victim"
    if victim is None or victim.manifest is None:
        return Verdict(UNDETERMINED, (fence.key,), f"{fence.summary}; why cannot be told from this input",
                       (_no_victim_archive(who, victim, ctx),))
    until = fence.time or 0.0
    before = [f for f in findings if f.node == victim.name and (f.time is None or f.time <= until)]
    for category, keys, why in RULES:
        hits = [f.key for f in before if f.key in keys]
        if hits:
            return Verdict(category, tuple(dict.fromkeys(hits + [fence.key])), why)
    return Verdict(UNDETERMINED, (fence.key,), f"{fence.summary}; nothing conclusive in the victim's data",
                   tuple(_what_is_missing(victim, findings)))


def _victim(fence: Finding, ctx: AnalysisContext) -> Optional[NodeInfo]:
    name = fence.details.get("victim_node")
    return ctx.node(name) if isinstance(name, str) and name else None


def _no_victim_archive(who: str, victim: Optional[NodeInfo], ctx: AnalysisContext) -> str:
    if victim is None:
        blind = [n.name for n in ctx.nodes if n.manifest is not None and "sysinfo" not in n.kinds]
        unknown = f" (no sysinfo, so no addresses, from {', '.join(blind)})" if blind else ""
        return f"no archive from the victim ({who}): no node of this input has that address{unknown}"
    why = f"{victim.status}: {victim.error}" if victim.error else victim.status
    return f"no archive from the victim ({victim.name}: {why})"


def _what_is_missing(victim: NodeInfo, findings: List[Finding]) -> List[str]:
    out = []
    names = {"kmsg": "kernel log", "packets": "packet capture", "sysinfo": "sysinfo snapshot",
             "counters": "scoutfs counter series"}
    for kind, what in names.items():
        if kind not in victim.kinds:
            out.append(f"no {what} from the victim ({victim.name})")
    for f in findings:
        if f.node == victim.name and f.category == "capture" and f.severity != "info":
            out.append(f.summary)
    if not out:
        out.append(f"no stall, memory, link or lock finding in the victim's data ({victim.name}); "
                   "the TCP analysis of the cluster port is not built yet")
    return out
