"""The ``scoutfs-collect`` command line's grammar: every command and its arguments.

One ``argparse`` definition, read by the CLI (:func:`parse`) and, through
:func:`build_parser`, by tools/build-dist.sh for the man page and the shell completion.
Errors are one line and exit status 2 (:class:`UsageError`).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from scoutfs_collect.analysis import cli as analysis_cli
from scoutfs_collect.core.errors import UsageError

COMMANDS = ("run", "check", "plugins", "profiles", "validate", "inspect", "report", "pack", "stop",
            "cluster", "fence-hook")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"IP {value!r} is not an IPv4 or IPv6 address") from None


def _port(value: str) -> int:
    try:
        port = int(value, 10)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"PORT {value!r} is not a port number from 1 to 65535")
    return port


def _capture_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="default",
                   help="profile name (site profiles in /etc/scoutfs-collect/profiles, then the "
                        "built-in ones) or a path to a .yaml file (default: default)")
    p.add_argument("--output-dir", help="where the work dir and the archive go "
                                        "(default: settings.output_dir, '.')")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile value, e.g. collectors.tcpdump.file_count=4")
    p.add_argument("--plugin-dir", action="append", default=[], metavar="DIR",
                   help="also load plugin .py files from DIR (root-owned, not group/world-writable)")
    p.add_argument("--events-file", type=Path, metavar="PATH",
                   help="append one JSON line per lifecycle event to PATH")
    p.add_argument("--keep-workdir", action="store_true",
                   help="keep the work dir after the archive is written")
    p.add_argument("ip", type=_ip, metavar="IP", help="the scoutfs server address to capture")
    p.add_argument("port", type=_port, metavar="PORT", help="the scoutfs server port")


class _VersionAction(argparse.Action):
    """--version, looking the version up only when asked (it scans the installed package
    metadata: tens of ms that stop and fence-hook, on the fence path, do not spend)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default,
                         help=help or "show program's version number and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        import scoutfs_collect

        sys.stdout.write(f"scoutfs-collect {scoutfs_collect.__version__}\n")
        parser.exit()


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 86400 * 365:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds above 0")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scoutfs-collect",
        description="Flight recorder for scoutfs: record ftrace, packets, the kernel log and "
                    "counters in bounded rings until a trigger fires, then pack one archive.",
        epilog="The default command is run: scoutfs-collect --profile default IP PORT",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("run", help="record until a trigger fires or Ctrl-C, then pack")
    _capture_args(p)
    p.add_argument("--control-stdin", action="store_true",
                   help="take 'stop peer|operator REASON' lines from stdin (what 'cluster' uses); "
                        "end of stdin does not stop the run")
    _capture_args(sub.add_parser("check", help="preflight only: print every problem and its fix"))
    p = sub.add_parser("plugins", help="list collector, trigger and analyzer types with their options")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plugin-dir", action="append", default=[], metavar="DIR")
    p = sub.add_parser("profiles", help="list profiles, or show one resolved")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--plugin-dir", action="append", default=[], metavar="DIR")
    p = sub.add_parser("validate", help="check a profile without running anything")
    p.add_argument("profile", metavar="PROFILE")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--plugin-dir", action="append", default=[], metavar="DIR")
    p = sub.add_parser("inspect", help="summarise an archive or a cluster bundle")
    p.add_argument("archive", type=Path, metavar="ARCHIVE")
    p.add_argument("--node", metavar="NODE", help="in a cluster bundle: that node's archive")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--members", action="store_true",
                   help="list every member of the archive with its size (reads it all)")
    analysis_cli.add_inspect_options(p)
    analysis_cli.add_report_parser(sub)
    p = sub.add_parser("pack", help="turn the work dir of an interrupted run into an archive")
    p.add_argument("workdir", type=Path, metavar="WORKDIR")
    p = sub.add_parser("stop", help="ask the running instance to stop and pack (as Ctrl-C)")
    p.add_argument("--no-wait", action="store_true", help="return once the request is sent")
    p.add_argument("--wait", choices=("finished", "durable"), default="finished",
                   help="return once the run has finished (default), or as soon as every "
                        "collector's data is on disk and fsync'ed (durable: the ftrace ring's raw "
                        "pages are written first, before text and trace.dat)")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="give up waiting after this long (exit 1; the run still stops)")
    p.add_argument("--reason", metavar="TEXT", help="the trigger reason the manifest records")
    p.add_argument("--type", dest="trigger_type", metavar="TYPE", default="operator",
                   help="the trigger type the manifest records (default operator; the fence "
                        "hook uses fence-hook)")
    from scoutfs_collect.fence import options as fence_hook  # its options, for help, man page, completion

    p = sub.add_parser("fence-hook", add_help=False, usage=fence_hook.USAGE,
                       description=fence_hook.DESCRIPTION,
                       help="run by scoutfs-fenced before the fence agent: the victim persists its "
                            "recorder first (fence-hook --help)")
    fence_hook.add_arguments(p)
    p.add_argument("agent", nargs=argparse.REMAINDER, metavar="-- AGENT [AGENT_ARGS...]",
                   help="the site's real fence agent and its arguments, run with the same "
                        "environment once the victim is durable or the grace is over")
    from scoutfs_collect.cluster import cli as cluster_cli

    cluster_cli.add_parser(sub, _Parser, _ip, _port)
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    args = list(argv)
    first = next((a for a in args if a not in ("--",)), None)
    if first is not None and first not in COMMANDS and first not in ("-h", "--help", "--version"):
        args.insert(0, "run")
    if first == "cluster":
        from scoutfs_collect.cluster.cli import insert_default

        args = insert_default(args)
    ns = build_parser().parse_args(args)
    if ns.command is None:
        raise UsageError("scoutfs-collect: no command given (see scoutfs-collect --help)")
    return ns
