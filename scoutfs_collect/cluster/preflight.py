"""Preflight on every node at once: reachability, scoutfs-collect version, ``check``.

One short ssh session per node (in parallel, ClusterShell's fan-out) runs
``scoutfs-collect --version && scoutfs-collect check ARGS``. A node is *unreachable*
when ssh itself fails (exit 255), has a *problem* when its version differs from the
coordinator's or its check found a fatal problem. Reports are printed grouped by node;
nodes with the same report are folded into one node set (``th[1-3]: ready``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Optional

from ClusterShell.Event import EventHandler

from scoutfs_collect import __version__
from scoutfs_collect.cluster import remote

SSH_FAILED = 255
log = logging.getLogger("scoutfs_collect.cluster")


@dataclasses.dataclass
class NodeCheck:
    """One node's preflight."""

    node: str
    rc: Optional[int] = None
    version: Optional[str] = None
    lines: List[str] = dataclasses.field(default_factory=list)
    ssh_errors: List[str] = dataclasses.field(default_factory=list)

    @property
    def unreachable(self) -> bool:
        return self.rc == SSH_FAILED and self.version is None

    @property
    def version_mismatch(self) -> bool:
        return self.version is not None and self.version != __version__

    @property
    def ready(self) -> bool:
        return self.rc == 0 and not self.version_mismatch

    def report(self) -> List[str]:
        """What is printed under the node's name."""
        if self.unreachable:
            why = "; ".join(e for e in self.ssh_errors if e.strip()) or "ssh failed"
            return [f"error: unreachable: {why}",
                    "       fix: check ssh to it (-o passes ssh options), or --allow-missing"]
        out: List[str] = []
        if self.version is None:
            out.append(f"error: scoutfs-collect not runnable there (exit {self.rc}): "
                       + "; ".join(self.lines[-2:]))
            out.append(f"       fix: install scoutfs-collect {__version__} on it, on root's PATH")
            return out
        if self.version_mismatch:
            out.append(f"error: scoutfs-collect {self.version} there, {__version__} here")
            out.append(f"       fix: install scoutfs-collect {__version__} on every node")
        out += [line for line in self.lines if line.strip()]
        return out


class _Collect(EventHandler):
    def __init__(self, checks: Dict[str, NodeCheck]) -> None:
        super().__init__()
        self.checks = checks

    def ev_read(self, worker, node, sname, msg) -> None:
        text = msg.decode("utf-8", "replace")
        check = self.checks.get(node)
        if check is None:  # a gateway's own message (tree mode)
            log.warning("%s: %s", node, text.strip())
            return
        if sname == "stderr":
            check.ssh_errors.append(text.strip())
            return
        match = remote.VERSION_LINE.match(text.strip())
        if check.version is None and not check.lines and match:
            check.version = match.group(1)
        else:
            check.lines.append(text.rstrip())

    def ev_hup(self, worker, node, rc) -> None:
        if node in self.checks:
            self.checks[node].rc = rc


def run_checks(task, args: remote.CaptureArgs, nodes: List[str]) -> Dict[str, NodeCheck]:
    """Run the preflight on every node at once and return each node's result."""
    checks = {node: NodeCheck(node) for node in nodes}
    handler = _Collect(checks)
    for node in nodes:
        task.shell(remote.check_command(args, node), nodes=node, handler=handler, stderr=True,
                   timeout=120)
    remote.resume(task, "preflight")
    for check in checks.values():
        if check.rc is None:  # timed out
            check.rc = SSH_FAILED if check.version is None else 1
            check.lines.append("error: preflight did not answer within 120 s")
    return checks


def print_grouped(checks: Dict[str, NodeCheck], line) -> None:
    """Print each distinct report once, under the node set that gave it."""
    groups: Dict[str, List[str]] = {}
    for check in checks.values():
        body = check.report() if not check.ready else [
            f"ready (scoutfs-collect {check.version})"] + [
            ln for ln in check.lines if ln.strip() and not ln.startswith("check: ready")]
        groups.setdefault("\n".join(body), []).append(check.node)
    for body, nodes in groups.items():
        line(f"---------------- {remote.fold(nodes)} ({len(nodes)})")
        for text in body.splitlines():
            line(f"  {text}")
