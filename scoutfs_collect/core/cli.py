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

from scoutfs_collect import __version__
from scoutfs_collect.core.errors import EXIT_NO_ARCHIVE, EXIT_OK, EXIT_USAGE, UsageError
from scoutfs_collect.plugin.api import Target
from scoutfs_collect.ui.console import Console, ConsoleHandler, detach_stream, stdout_line

COMMANDS = ("run", "check", "plugins", "profiles", "validate", "inspect", "pack", "stop")
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scoutfs-collect",
        description="Flight recorder for scoutfs: record ftrace, packets, the kernel log and "
                    "counters in bounded rings until a trigger fires, then pack one archive.",
        epilog="'run' is the default command: scoutfs-collect --profile default IP PORT",
    )
    parser.add_argument("--version", action="version", version=f"scoutfs-collect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _capture_args(sub.add_parser("run", help="record until a trigger fires or Ctrl-C, then pack"))
    _capture_args(sub.add_parser("check", help="preflight only: print every problem and its fix"))
    p = sub.add_parser("plugins", help="list collector and trigger types with their options")
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
    p = sub.add_parser("inspect", help="summarise an archive")
    p.add_argument("archive", type=Path, metavar="ARCHIVE")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--members", action="store_true",
                   help="list every member of the archive with its size (reads it all)")
    p = sub.add_parser("pack", help="turn the work dir of an interrupted run into an archive")
    p.add_argument("workdir", type=Path, metavar="WORKDIR")
    p = sub.add_parser("stop", help="ask the running instance to stop and pack (as Ctrl-C)")
    p.add_argument("--no-wait", action="store_true", help="return once the request is sent")
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    args = list(argv)
    first = next((a for a in args if a not in ("--",)), None)
    if first is not None and first not in COMMANDS and first not in ("-h", "--help", "--version"):
        args.insert(0, "run")
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
        ns = parse(argv)
        command = getattr(sys.modules[__name__], f"cmd_{ns.command}")
        return command(ns, argv, console)
    except UsageError as exc:
        console.line(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.line("interrupted before anything was started; nothing changed")
        return EXIT_USAGE
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
        fatal = _print_problems(console, runner.preflight())
    finally:
        runner.cleanup()  # gives back what prepare built (the demo tree)
    if fatal:
        console.line(f"check: {fatal} problem(s) must be fixed before a run")
        return EXIT_USAGE
    console.line("check: ready to run")
    return EXIT_OK


def cmd_run(ns, argv, console) -> int:
    from scoutfs_collect.core.runner import Runner
    from scoutfs_collect.system.lock import LockBusy

    os.umask(0o077)  # every file of the run (ours, plugins', children's) private to root
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a lost terminal must not end a capture
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # like Ctrl-C: nothing changed yet
    runner = Runner(_request(ns, argv, console), console)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: runner.handle_signal(signum))
    try:
        fatal = _print_problems(console, runner.preflight())
    except BaseException:
        runner.cleanup()
        raise
    if fatal:
        runner.cleanup()
        runner.events.emit("error", plugin="core", message=f"preflight: {fatal} problem(s)")
        runner.events.close()
        console.line(f"error: preflight found {fatal} problem(s); nothing was started")
        return EXIT_USAGE
    try:
        status = runner.run()
    except LockBusy as exc:
        raise UsageError(f"{exc}; end it with 'scoutfs-collect stop'") from None
    if runner.archive_path is not None:
        stdout_line(f"archive: {runner.archive_path}")
    elif status == EXIT_NO_ARCHIVE:
        console.line(f"no archive written; work dir kept: {runner.workdir}")
    return status


def cmd_plugins(ns, argv, console) -> int:
    reg = _registry(ns.plugin_dir, console)
    types = reg.of_kind("collector") + reg.of_kind("trigger")
    if ns.json:
        stdout_line(json.dumps([t.as_dict() for t in types], indent=2, default=str))
        return EXIT_OK
    for t in types:
        stdout_line(f"{t.type_name} ({t.kind}, from {t.plugin})")
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


def cmd_inspect(ns, argv, console) -> int:
    from scoutfs_collect.archive import read as inspect_archive

    if not ns.archive.is_file():
        raise UsageError(f"inspect: {ns.archive}: no such archive")
    try:
        data = inspect_archive.read_manifest(ns.archive)
    except ValueError as exc:
        raise UsageError(f"inspect: {exc}") from None
    stdout_line(json.dumps(data, indent=2) if ns.json else inspect_archive.render(data))
    if ns.members:
        for name, size in inspect_archive.list_members(ns.archive):
            stdout_line(f"{size:>14}  {name}")
    return EXIT_OK


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
    os.kill(holder.pid, signal.SIGTERM)
    console.line(f"asked scoutfs-collect (pid {holder.pid}) to stop and pack")
    if ns.no_wait:
        return EXIT_OK
    lock.wait_released()
    console.line("it has finished")
    return EXIT_OK
