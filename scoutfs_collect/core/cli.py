"""The ``scoutfs-collect`` command: arguments in, exit status out.

Exit status: 0 archive written; 1 archive written but a plugin failed (the manifest
says which); 2 usage, profile or preflight error (nothing written, no state
changed); 3 no archive could be written (the work dir is kept and named).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import List, NoReturn, Optional, Sequence

from scoutfs_collect.analysis import cli as analysis_cli
from scoutfs_collect.core.errors import EXIT_NO_ARCHIVE, EXIT_OK, EXIT_USAGE, UsageError
from scoutfs_collect.plugin.api import Target
from scoutfs_collect.ui.console import Console, ConsoleHandler, detach_stream, stdout_line

COMMANDS = ("run", "check", "plugins", "profiles", "validate", "inspect", "report", "pack", "stop",
            "cluster", "fence-hook")
log = logging.getLogger("scoutfs_collect")


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``scoutfs-collect`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console()
    handler = ConsoleHandler(console)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        if argv[:1] == ["fence-hook"]:  # normally dispatched earlier (scoutfs_collect.entry)
            from scoutfs_collect.fence.launch import main as fence_hook

            return fence_hook(argv[1:])
        ns = parse(argv)
        command = getattr(sys.modules[__name__], f"cmd_{ns.command}")
        return command(ns, argv, console)
    except UsageError as exc:
        console.line(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.line("interrupted before anything was started; nothing changed")
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (``inspect ... | head``): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit's own flush cannot fail again
        os.close(devnull)
        return 128 + signal.SIGPIPE  # what a shell shows for a tool killed by SIGPIPE
    finally:
        log.removeHandler(handler)
        if not console.alive:
            detach_stream("stderr")


def _registry(plugin_dirs: Sequence[str], console: Console):
    from scoutfs_collect.core import registry

    reg = registry.load(plugin_dirs)
    for source, message in reg.load_errors:
        console.line(f"warning: plugin {source} not loaded: {message}")
    return reg


def _request(ns: argparse.Namespace, argv: List[str], console: Console):
    from scoutfs_collect.core import profile as profiles
    from scoutfs_collect.core.runner import RunRequest

    reg = _registry(ns.plugin_dir, console)
    prof = profiles.load(ns.profile, ns.overrides, reg)
    # The flags are settings too: the manifest then records what the run really used.
    prof.settings.output_dir = str(Path(ns.output_dir or prof.settings.output_dir).absolute())
    prof.settings.keep_workdir = prof.settings.keep_workdir or ns.keep_workdir
    return RunRequest(profile=prof, registry=reg, target=Target(ns.ip, ns.port),
                      argv=["scoutfs-collect"] + argv, events_file=ns.events_file)


def _print_problems(console: Console, problems) -> int:
    fatal = 0
    for source, p in problems:
        tag = "error" if p.fatal else "note"
        fatal += p.fatal
        console.line(f"{tag}: {source}: {p.message}")
        if p.fix:
            console.line(f"       fix: {p.fix}")
    return fatal


def cmd_check(ns, argv, console) -> int:
    from scoutfs_collect.core.runner import Runner

    runner = Runner(_request(ns, argv, console), console, dry_run=True)
    try:
        fatal = _print_problems(console, runner.check())
    finally:
        runner.cleanup()  # gives back what prepare built (the demo tree)
    if fatal:
        console.line(f"check: {fatal} problem(s) must be fixed before a run")
        return EXIT_USAGE
    console.line("check: ready to run")
    return EXIT_OK


def cmd_run(ns, argv, console) -> int:
    """One lifecycle, lock first: the host lock, then prepare and preflight, then the
    recording; ``Runner.close`` on every path (cleanup, no child left, lock released)."""
    from scoutfs_collect.core.runner import Runner
    from scoutfs_collect.system.lock import LockBusy

    os.umask(0o077)  # every file of the run (ours, plugins', children's) private to root
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a lost terminal must not end a capture
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # like Ctrl-C: nothing changed yet
    runner = Runner(_request(ns, argv, console), console)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: runner.handle_signal(signum))
    try:
        try:
            runner.lock_host()
        except LockBusy as exc:
            where = f"; its work dir is {exc.holder.workdir}" if exc.holder and exc.holder.workdir else ""
            raise UsageError(f"{exc}{where}; end it with 'scoutfs-collect stop'") from None
        except OSError as exc:
            from scoutfs_collect.core.checks import check_lock

            said = [p.message for p in check_lock(runner.lock)]
            raise UsageError(said[0] if said else
                             f"cannot take the host lock {runner.lock.path}: {exc.strerror}") from None
        fatal = _print_problems(console, runner.preflight())
        if fatal:
            runner.events.emit("error", plugin="core", message=f"preflight: {fatal} problem(s)")
            console.line(f"error: preflight found {fatal} problem(s); nothing was started")
            return EXIT_USAGE
        if getattr(ns, "control_stdin", False):
            from scoutfs_collect.cluster import control

            control.start(runner)
        status = runner.record()
    finally:
        runner.close()
    if runner.archive_path is not None:
        stdout_line(f"archive: {runner.archive_path}")
    elif status == EXIT_NO_ARCHIVE:
        console.line(f"no archive written; work dir kept: {runner.workdir}")
    return status


def cmd_plugins(ns, argv, console) -> int:
    reg = _registry(ns.plugin_dir, console)
    types = reg.of_kind("collector") + reg.of_kind("trigger") + reg.of_kind("analyzer")
    if ns.json:
        stdout_line(json.dumps([t.as_dict() for t in types], indent=2, default=str))
        return EXIT_OK
    for t in types:
        reads = f", reads {', '.join(t.cls.sources)}" if t.kind == "analyzer" else ""
        stdout_line(f"{t.type_name} ({t.kind}{reads}, from {t.plugin})")
        stdout_line("    " + t.doc.replace("\n", "\n    "))
        if t.options:
            stdout_line("    options:")
        for o in t.options:
            choices = f" one of {', '.join(map(str, o.choices))};" if o.choices else ""
            stdout_line(f"      {o.name} ({o.type_name}, default {o.default!r}):{choices} {o.doc}")
        stdout_line("")
    return EXIT_OK


def cmd_profiles(ns, argv, console) -> int:
    from scoutfs_collect.core import profile as profiles

    if ns.name:
        prof = profiles.load(ns.name, ns.overrides, _registry(ns.plugin_dir, console))
        stdout_line(f"# {prof.name} ({prof.source})")
        stdout_line(profiles.dump(prof).rstrip())
        return EXIT_OK
    for name in sorted(set(profiles.site_profiles()) | set(profiles.builtin_profiles())):
        path = profiles.locate(name)
        try:
            prof = profiles.load(name)
            desc = prof.description.strip().splitlines()[0] if prof.description else ""
        except UsageError as exc:
            desc = f"(invalid: {exc})"
        stdout_line(f"{name:<16} {desc}  [{path}]")
    return EXIT_OK


def cmd_validate(ns, argv, console) -> int:
    from scoutfs_collect.core import profile as profiles

    prof = profiles.load(ns.profile, ns.overrides, _registry(ns.plugin_dir, console))
    stdout_line(f"{prof.source}: ok ({len(prof.collectors)} collectors, {len(prof.triggers)} triggers)")
    return EXIT_OK


def cmd_cluster(ns, argv, console) -> int:
    from scoutfs_collect.cluster.cli import dispatch

    return dispatch(ns, argv, console)


def cmd_inspect(ns, argv, console) -> int:
    from scoutfs_collect.archive import bundle
    from scoutfs_collect.archive import read as inspect_archive

    if analysis_cli.wants_analysis(ns):
        return analysis_cli.inspect(ns)
    if not ns.archive.is_file():
        raise UsageError(f"inspect: {ns.archive}: no such archive")
    if bundle.is_bundle(ns.archive):
        return bundle.inspect(ns.archive, ns.node, ns.json, ns.members)
    if ns.node:
        raise UsageError(f"inspect: --node: {ns.archive} is a node archive, not a cluster bundle")
    try:
        data = inspect_archive.read_manifest(ns.archive)
    except ValueError as exc:
        raise UsageError(f"inspect: {exc}") from None
    if ns.json:
        stdout_line(json.dumps(dict(data, history=analysis_cli.history_section(data)), indent=2))
    else:
        stdout_line(inspect_archive.render(data) + analysis_cli.history_text(data))
    if ns.members:
        for name, size in inspect_archive.list_members(ns.archive):
            stdout_line(f"{size:>14}  {name}")
    return EXIT_OK


def cmd_report(ns, argv, console) -> int:
    return analysis_cli.report(ns)


def cmd_pack(ns, argv, console) -> int:
    from scoutfs_collect.archive.recover import pack_workdir

    return pack_workdir(ns.workdir, console)


def cmd_stop(ns, argv, console) -> int:
    from scoutfs_collect.system.lock import HostLock

    lock = HostLock()
    try:
        holder = lock.probe()
    except OSError as exc:
        raise UsageError(f"stop: cannot read the host lock {lock.path}: {exc.strerror}") from None
    if holder is None:
        raise UsageError("stop: no scoutfs-collect is running on this host")
    if holder.pid <= 0:
        raise UsageError(f"stop: the host lock {lock.path} is held but names no pid")
    if ns.reason is not None or ns.trigger_type != "operator" or ns.wait == "durable" or ns.timeout:
        from scoutfs_collect.core.control import stop_over_socket

        return stop_over_socket(holder.pid, ns.trigger_type, ns.reason, ns.wait, ns.timeout,
                                ns.no_wait, console)
    os.kill(holder.pid, signal.SIGTERM)
    console.line(f"asked scoutfs-collect (pid {holder.pid}) to stop and pack")
    if ns.no_wait:
        return EXIT_OK
    lock.wait_released()
    console.line("it has finished")
    return EXIT_OK
