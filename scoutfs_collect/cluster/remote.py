"""What the coordinator runs on the nodes, and how it talks to ClusterShell's task.

The node commands are ``scoutfs-collect`` itself, found on the node's ``PATH``: a
version query plus ``check`` (preflight), ``run ... --events-file /dev/stdout
--control-stdin`` (the run session) and ``cluster node-status`` (``cluster gather``).
``%h`` in ``--set`` values and ``--output-dir`` becomes each node's name.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from typing import Dict, List, Optional

from ClusterShell.NodeSet import NodeSet, NodeSetParseError
from ClusterShell.Task import Task, task_self

from scoutfs_collect.core.errors import UsageError

REMOTE = "scoutfs-collect"
# Appended after the user's -o options (ssh keeps the first value, so theirs win): a node
# powered off shows up as a lost session within ~30 s instead of TCP's minutes.
KEEPALIVE = "-oServerAliveInterval=10 -oServerAliveCountMax=3"
VERSION_LINE = re.compile(r"^scoutfs-collect (\S+)$")


@dataclasses.dataclass
class CaptureArgs:
    """The capture arguments passed on to every node (``%h`` not yet replaced)."""

    profile: str
    overrides: List[str]
    output_dir: Optional[str]
    ip: str
    port: int

    def for_node(self, node: str) -> List[str]:
        args = ["--profile", self.profile]
        for item in self.overrides:
            args += ["--set", item.replace("%h", node)]
        if self.output_dir:
            args += ["--output-dir", self.output_dir.replace("%h", node)]
        return args + [self.ip, str(self.port)]


def nodes_of(nodeset: str) -> List[str]:
    """The node names of a ClusterShell node set (``node[01-16],admin``)."""
    try:
        nodes = list(NodeSet(nodeset))
    except NodeSetParseError as exc:
        raise UsageError(f"cluster: -w {nodeset!r}: {exc}") from None
    if not nodes:
        raise UsageError(f"cluster: -w {nodeset!r} names no node")
    return nodes


def fold(nodes: List[str]) -> str:
    """``['n1', 'n2', 'n3']`` -> ``n[1-3]``."""
    return str(NodeSet.fromlist(nodes))


def make_task(ssh_options: Optional[str], node_count: int) -> Task:
    """This thread's ClusterShell task set up for long-lived sessions."""
    task = task_self()
    task.set_info("ssh_options", f"{ssh_options or ''} {KEEPALIVE}".strip())
    # Each long-lived session holds a fan-out slot: every node must get one at once.
    task.set_info("fanout", max(int(task.info("fanout") or 64), node_count))
    task.set_info("connect_timeout", 10)
    task.set_default("stdout_msgtree", False)  # events are handled live, never kept
    task.set_default("stderr_msgtree", False)
    return task


def check_command(args: CaptureArgs, node: str) -> str:
    q = " ".join(shlex.quote(a) for a in args.for_node(node))
    return f"{REMOTE} --version 2>&1 && exec {REMOTE} check {q} 2>&1"


def run_command(args: CaptureArgs, node: str) -> str:
    q = " ".join(shlex.quote(a) for a in args.for_node(node))
    return f"exec {REMOTE} run --events-file /dev/stdout --control-stdin {q}"


def status_command() -> str:
    return f"exec {REMOTE} cluster node-status"


def run_commands(args: CaptureArgs, nodes: List[str]) -> Dict[str, str]:
    return {node: run_command(args, node) for node in nodes}
