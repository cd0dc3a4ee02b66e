"""What the coordinator runs on the nodes, and how it talks to ClusterShell's task.

The node commands are ``scoutfs-collect`` itself, found on the node's ``PATH``: a
version query plus ``check`` (preflight), ``run ... --events-file /dev/stdout
--control-stdin`` (the run session), ``cluster node-status`` and ``pack`` (``cluster gather``).
``%h`` in ``--set`` values and ``--output-dir`` becomes each node's name.
"""

from __future__ import annotations

import dataclasses
import os
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

    def shell_words(self, node: Optional[str]) -> str:
        """The arguments quoted for the node's shell. ``node`` None (tree mode, one command
        for every node): ``%h`` becomes ``$(hostname -s)`` evaluated on the node, as
        ClusterShell's own tree-mode rcopy names nodes."""
        if node is not None:
            return " ".join(shlex.quote(a) for a in self.for_node(node))
        return " ".join('"$(hostname -s)"'.join(shlex.quote(part) for part in a.split("%h"))
                        for a in self.for_node("%h"))


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
    # Tree mode: a gateway batches messages up to this long (default 0.25 s); a node's
    # 'triggered' must come through at once to stop the others within the budget.
    task.set_info("grooming_delay", 0.01)
    task.set_default("stdout_msgtree", False)  # events are handled live, never kept
    task.set_default("stderr_msgtree", False)
    return task


def resume(task, what: str) -> None:
    """Run the task's loop; a ClusterShell routing failure (tree mode: no gateway left for
    some nodes) becomes a one-line error instead of a traceback."""
    from ClusterShell.Propagation import RouteResolvingError
    from ClusterShell.Topology import TopologyError

    try:
        task.resume()
    except (RouteResolvingError, TopologyError) as exc:
        raise UsageError(f"cluster: {what}: {exc} (tree mode: check the gateways and "
                         "topology.conf)") from None


def tree_mode(task) -> bool:
    """Whether ClusterShell will go through gateways: a topology.conf in one of its
    config paths (/etc/clustershell, $CLUSTERSHELL_CFGDIR, ...) and auto_tree on."""
    if task.topology is None:
        for path in reversed(Task.TOPOLOGY_CONFIGS):
            if os.path.exists(path):
                task.load_topology(path)
                break
    return task.topology is not None and bool(task.default("auto_tree"))


def check_command(args: CaptureArgs, node: str) -> str:
    return f"{REMOTE} --version 2>&1 && exec {REMOTE} check {args.shell_words(node)} 2>&1"


def run_command(args: CaptureArgs, node: Optional[str]) -> str:
    return f"exec {REMOTE} run --events-file /dev/stdout --control-stdin {args.shell_words(node)}"


def status_command(output_dir: Optional[str] = None, node: str = "") -> str:
    """``cluster node-status``; ``output_dir`` with ``%h`` replaced by ``node``."""
    extra = f" --output-dir {shlex.quote(output_dir.replace('%h', node))}" if output_dir else ""
    return f"exec {REMOTE} cluster node-status{extra}"


def pack_command(workdir: str) -> str:
    """``scoutfs-collect pack WORKDIR`` on a node (a run killed before it packed)."""
    return f"exec {REMOTE} pack {shlex.quote(workdir)}"


def run_commands(args: CaptureArgs, nodes: List[str], tree: bool) -> Dict[str, str]:
    """One command per node; in tree mode one command for all (key: the folded node set):
    a ClusterShell gateway delivers stdin writes to its latest worker only."""
    if tree:
        return {fold(nodes): run_command(args, None)}
    return {node: run_command(args, node) for node in nodes}
