"""The ``cluster`` command's arguments (registered by :mod:`scoutfs_collect.core.arguments`).

::

    scoutfs-collect cluster -w NODESET [-o SSH_OPTIONS] [--allow-missing] [--bundle-dir DIR]
                            [--profile P] [--set K=V]... [--output-dir DIR] [--events-file PATH] IP PORT
    scoutfs-collect cluster check  -w NODESET (same options)
    scoutfs-collect cluster gather -w NODESET [-o SSH_OPTIONS] [--bundle-dir DIR] [--output-dir DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, List

SUBCOMMANDS = ("run", "check", "gather", "node-status")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-w", dest="nodeset", required=True, metavar="NODESET",
                   help="the nodes, as a ClusterShell node set: node[01-16],admin")
    p.add_argument("-o", dest="ssh_options", metavar="SSH_OPTIONS",
                   help='options for ssh, as clush -o: -o "-F /etc/ssh/cluster_config"')
    p.add_argument("--bundle-dir", type=Path, metavar="DIR",
                   help="where the bundle is written (default: the current directory)")
    p.add_argument("--events-file", type=Path, metavar="PATH",
                   help="append one JSON line per cluster event to PATH")


def _capture(p: argparse.ArgumentParser, ip: Callable, port: Callable) -> None:
    _common(p)
    p.add_argument("--allow-missing", action="store_true",
                   help="record unreachable nodes as missing and start the others")
    p.add_argument("--profile", default="default", help="profile used on every node (default: default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile value on every node; %%h becomes the node's name")
    p.add_argument("--output-dir", metavar="DIR",
                   help="output dir on each node; %%h becomes the node's name")
    p.add_argument("ip", type=ip, metavar="IP", help="the scoutfs server address to capture")
    p.add_argument("port", type=port, metavar="PORT", help="the scoutfs server port")


def add_parser(sub, parser_class, ip: Callable, port: Callable) -> None:
    """Register ``cluster`` and its subcommands on the top-level subparsers."""
    p = sub.add_parser("cluster", help="run on every node of a cluster at once (ClusterShell)",
                       description="Preflight every node, record on all of them, stop them all on "
                                   "the first trigger, bring back one bundle.")
    csub = p.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", parser_class=parser_class)
    _capture(csub.add_parser("run", help="the default: record on every node until a trigger"), ip, port)
    _capture(csub.add_parser("check", help="preflight every node, problems grouped by node"), ip, port)
    gather = csub.add_parser("gather", help="bundle every node's latest archive (packing a run "
                                            "that was killed or powered off)")
    _common(gather)
    gather.add_argument("--output-dir", metavar="DIR",
                        help="where the runs wrote on each node (%%h: the node's name): a node "
                             "booted again is looked at there too")
    status = csub.add_parser("node-status", help=argparse.SUPPRESS)
    status.add_argument("--output-dir", help=argparse.SUPPRESS)


def insert_default(args: List[str]) -> List[str]:
    """``cluster -w ...`` means ``cluster run -w ...``."""
    if "cluster" not in args:
        return args
    i = args.index("cluster") + 1
    if i >= len(args) or args[i] not in SUBCOMMANDS + ("-h", "--help"):
        args = args[:i] + ["run"] + args[i:]
    return args


def dispatch(ns, argv, console) -> int:
    from scoutfs_collect.cluster import coordinator

    if ns.cluster_command == "node-status":
        from scoutfs_collect.cluster.nodestatus import print_status

        return print_status(ns.output_dir)
    return getattr(coordinator, f"cmd_{ns.cluster_command}")(ns, argv, console)
