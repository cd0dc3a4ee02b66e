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
``undetermined``, nothing to explain.

No archive from the victim: only the zero-window rule can hold, on the other nodes'
captures (the victim's kernel advertised it, so that kernel was up); the verdict then
names the missing archive in ``missing`` and says in its summary what the victim's own
log would have told apart. The network rule does not hold without it: keepalives are
answered by the peer's kernel, so the server's unanswered segments and silence from the
victim mean the network *or* the whole node (a panic, a hard lockup, power loss), which
only the victim's own archive tells apart (its kernel log, and its capture showing its
own segments going out unanswered); the verdict is ``undetermined`` and says so.
Nothing of the above: ``undetermined``, naming what was missing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from scoutfs_collect.plugin.finding import AnalysisContext, Finding, NodeInfo

UNDETERMINED = "undetermined"
LOOPBACK = ("127.", "::1")


@dataclasses.dataclass
class Case:
    """What a rule looks at: the victim (None: no node of the input has its address), its
    addresses, and every finding (of any node) from before the fence (those without a
    time too)."""

    victim: Optional[NodeInfo]
    ips: Set[str]
    before: List[Finding]
    ctx: AnalysisContext

    @property
    def archived(self) -> bool:
        """Whether the input holds the victim's own archive."""
        return self.victim is not None and self.victim.manifest is not None

    def own(self, *keys: str) -> List[Finding]:
        """The victim's own findings of these keys."""
        if self.victim is None:
            return []
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
    victim = case.victim.name if case.victim else None
    unanswered = [f for f in case.before if f.key == "tcp.retransmission" and f.details.get("unanswered")
                  and ((f.node == victim and case.sent_by_victim(f)) or case.sent_to_victim(f))]
    if not unanswered:
        return []
    others = {n.name for n in case.ctx.nodes if n.name != victim and "packets" in n.kinds}
    silent = [f for f in case.before
              if f.key == "tcp.silence" and f.node in others and case.sent_by_victim(f)]
    if others and not silent:
        return []  # the other nodes' captures show the victim's segments arriving
    return unanswered + silent


def _unreachable(case: Case) -> List[Finding]:
    """Without the victim's archive: segments or keep-alive probes to the victim unanswered,
    and the victim silent, in the other nodes' captures."""
    unanswered = [f for f in case.before if case.sent_to_victim(f) and (
        f.key == "tcp.keepalive_unanswered"
        or (f.key == "tcp.retransmission" and f.details.get("unanswered")))]
    silent = [f for f in case.before if f.key == "tcp.silence" and case.sent_by_victim(f)]
    return unanswered + silent if unanswered and silent else []


#: what :func:`_unreachable` means (keepalives are answered by the peer's kernel)
UNREACHABLE = ("nothing from the victim arrived, not even its kernel's answers to keep-alive probes: "
               "the network or the whole node (a panic, a hard lockup, power loss); only the victim's "
               "own archive tells them apart")


def _lock(case: Case) -> List[Finding]:
    return case.own("counters.lock")


@dataclasses.dataclass(frozen=True)
class Rule:
    """A verdict rule: its ``category``, its ``test`` (the findings that support it), why
    in one line; ``blind``: for a rule that also holds on the other nodes' evidence alone
    (without the victim's archive), what that missing archive leaves open."""

    category: str
    test: Callable[[Case], List[Finding]]
    why: str
    blind: str = ""


#: in order: the first that holds wins
RULES: Sequence[Rule] = (
    Rule("node-stall", _stall, "the victim's kernel reports a stall before the fence: it stopped answering, "
                               "not the network"),
    Rule("node-stall", _zero_window, "the victim advertised a zero window: its kernel was up, scoutfs on it "
                                     "stopped reading",
         blind="the victim's own log is missing, so hung tasks, a soft lockup or an OOM kill "
               "cannot be told apart"),
    Rule("memory", _memory, "the victim was out of memory before the fence"),
    Rule("network", _link, "the victim's network interface failed before the fence"),
    Rule("network", _cut, "nothing from the victim reached the server while the victim's segments (or "
                          "the server's to it) went unanswered, with no stall in its log: the network "
                          "between them"),
    Rule("lock", _lock, "scoutfs lock traffic on the victim stood out before the fence"),
)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """``category`` (one of the finding categories, or ``undetermined``), the ``keys`` of
    the findings that support it, a one-line ``summary``, and what data was ``missing``:
    for ``undetermined``, and for a verdict reached without the victim's archive."""

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
    until = fence.time or 0.0
    ip = fence.details.get("victim_ip")
    addresses = victim.addresses if victim else []
    ips = {ip} if isinstance(ip, str) and ip else {a for a in addresses if not a.startswith(LOOPBACK)}
    case = Case(victim, ips, [f for f in findings if f.time is None or f.time <= until], ctx)
    if not case.archived:
        return _without_victim(fence, case)
    for rule in RULES:
        hits = [f.key for f in rule.test(case)]
        if hits:
            return Verdict(rule.category, tuple(dict.fromkeys(hits + [fence.key])), rule.why)
    assert victim is not None  # archived
    return Verdict(UNDETERMINED, (fence.key,), f"{fence.summary}; nothing conclusive in the victim's data",
                   tuple(_what_is_missing(victim, findings)))


def _without_victim(fence: Finding, case: Case) -> Verdict:
    """The verdict when the input holds no archive of the victim: a rule that holds on the
    other nodes' evidence alone (its summary saying what stays open), else
    ``undetermined``, saying what the others' evidence narrows it down to."""
    missing = (_no_victim_archive(fence.details.get("victim") or "the victim", case.victim, case.ctx),)
    for rule in RULES:
        if rule.blind:
            hits = [f.key for f in rule.test(case)]
            if hits:
                return Verdict(rule.category, tuple(dict.fromkeys(hits + [fence.key])),
                               f"{rule.why}; {rule.blind}", missing)
    why = UNREACHABLE if _unreachable(case) else "why cannot be told from this input"
    return Verdict(UNDETERMINED, (fence.key,), f"{fence.summary}; {why}", missing)


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
