"""The verdict of ``inspect --findings``: which category most likely explains the fence,
and the findings that support it, or ``undetermined`` with the data that was missing.

The rules, in order (the first that holds wins); each looks at the findings from before
the fence about its *victim* (the node the fencing line names, at the address it names):

=============  ===================================================================
category       before the fence
=============  ===================================================================
node-stall     a hung task, a soft lockup or an RCU stall in the victim's kernel log
node-stall     a zero window advertised by the victim (any node's capture): its kernel
               was up, scoutfs on it stopped reading
memory         an OOM kill in the victim's kernel log, or low MemAvailable in its sysinfo
network        a NETDEV WATCHDOG timeout, a link down or a bonding failover on the victim
network        retransmissions unanswered: the victim's to the server in its own capture,
               or the server's to the victim in any capture; and nothing from the victim
               reaching the other nodes up to the fence, where they captured (``tcp.silence``
               from the victim in another node's capture). No stall in the victim's log:
               the node-stall rules come first.
lock           scoutfs lock counters moving far faster than before
=============  ===================================================================

The fence explained is the one whose line stopped a recorder (a trigger's reason), else
the earliest: another fencing line in the same kernel log (another client fenced
earlier, the test hosts' shared log) does not take its place. No fencing line anywhere:
``undetermined``, nothing to explain. No archive from the victim, or nothing of the
above: ``undetermined``, naming what was missing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from scoutfs_collect.plugin.finding import AnalysisContext, Finding, NodeInfo

UNDETERMINED = "undetermined"
LOOPBACK = ("127.", "::1")


@dataclasses.dataclass
class Case:
    """What a rule looks at: the victim, its addresses, and every finding (of any node)
    from before the fence (those without a time too)."""

    victim: NodeInfo
    ips: Set[str]
    before: List[Finding]
    ctx: AnalysisContext

    def own(self, *keys: str) -> List[Finding]:
        """The victim's own findings of these keys."""
        return [f for f in self.before if f.node == self.victim.name and f.key in keys]

    def sent_by_victim(self, f: Finding) -> bool:
        return f.details.get("src_ip") in self.ips

    def sent_to_victim(self, f: Finding) -> bool:
        return f.details.get("dst_ip") in self.ips


def _stall(case: Case) -> List[Finding]:
    return case.own("kernel.hung_task", "kernel.soft_lockup", "kernel.rcu_stall")


def _zero_window(case: Case) -> List[Finding]:
    return [f for f in case.before if f.key == "tcp.zero_window" and case.sent_by_victim(f)]


def _memory(case: Case) -> List[Finding]:
    return case.own("kernel.oom_kill", "memory.low")


def _link(case: Case) -> List[Finding]:
    return case.own("kernel.netdev_watchdog", "kernel.link_down", "kernel.bond_failover")


def _cut(case: Case) -> List[Finding]:
    unanswered = [f for f in case.before if f.key == "tcp.retransmission" and f.details.get("unanswered")
                  and ((f.node == case.victim.name and case.sent_by_victim(f)) or case.sent_to_victim(f))]
    if not unanswered:
        return []
    others = {n.name for n in case.ctx.nodes if n.name != case.victim.name and "packets" in n.kinds}
    silent = [f for f in case.before
              if f.key == "tcp.silence" and f.node in others and case.sent_by_victim(f)]
    if others and not silent:
        return []  # the other nodes' captures show the victim's segments arriving
    return unanswered + silent


def _lock(case: Case) -> List[Finding]:
    return case.own("counters.lock")


#: (category, the rule: the findings that support it, why in one line), in order
RULES: Sequence[Tuple[str, Callable[[Case], List[Finding]], str]] = (
    ("node-stall", _stall, "the victim's kernel reports a stall before the fence: it stopped answering, "
                           "not the network"),
    ("node-stall", _zero_window, "the victim advertised a zero window: its kernel was up, scoutfs on it "
                                 "stopped reading"),
    ("memory", _memory, "the victim was out of memory before the fence"),
    ("network", _link, "the victim's network interface failed before the fence"),
    ("network", _cut, "nothing from the victim reached the server while the victim's segments (or the "
                      "server's to it) went unanswered, with no stall in its log: the network between them"),
    ("lock", _lock, "scoutfs lock traffic on the victim stood out before the fence"),
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
    fence = min(_triggering(fences, ctx) or fences, key=lambda f: f.time or 0.0)
    victim = _victim(fence, ctx)
    who = fence.details.get("victim") or "the victim"
    if victim is None or victim.manifest is None:
        return Verdict(UNDETERMINED, (fence.key,), f"{fence.summary}; why cannot be told from this input",
                       (_no_victim_archive(who, victim, ctx),))
    until = fence.time or 0.0
    ip = fence.details.get("victim_ip")
    ips = {ip} if isinstance(ip, str) and ip else {a for a in victim.addresses if not a.startswith(LOOPBACK)}
    case = Case(victim, ips, [f for f in findings if f.time is None or f.time <= until], ctx)
    for category, rule, why in RULES:
        hits = [f.key for f in rule(case)]
        if hits:
            return Verdict(category, tuple(dict.fromkeys(hits + [fence.key])), why)
    return Verdict(UNDETERMINED, (fence.key,), f"{fence.summary}; nothing conclusive in the victim's data",
                   tuple(_what_is_missing(victim, findings)))


def _triggering(fences: List[Finding], ctx: AnalysisContext) -> List[Finding]:
    """The fences whose line is what stopped a recorder (its trigger's reason)."""
    reasons = set()
    for n in ctx.nodes:
        trig = n.manifest.get("trigger") if isinstance(n.manifest, dict) else None
        if isinstance(trig, dict) and trig.get("reason"):
            reasons.add(str(trig["reason"]))
    return [f for f in fences if any(e.text in reasons for e in f.evidence)]


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
        out.append(f"no stall, memory, link, TCP or lock finding that explains the fence in the "
                   f"victim's data ({victim.name})")
    return out
