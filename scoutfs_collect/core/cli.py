"""The ``scoutfs-collect`` command: arguments in (their grammar is :mod:`.arguments`), exit
status out.

Exit status: 0 archive written; 1 archive written but a plugin failed (the manifest
says which); 2 usage, profile or preflight error (nothing written, no state
changed); 3 no archive could be written (the work dir is kept and named).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from scoutfs_collect.analysis import cli as analysis_cli
from scoutfs_collect.core.arguments import parse
from scoutfs_collect.core.errors import EXIT_NO_ARCHIVE, EXIT_OK, EXIT_USAGE, UsageError
from scoutfs_collect.plugin.api import Target
from scoutfs_collect.ui.console import Console, ConsoleHandler, detach_stream, stdout_line

log = logging.getLogger("scoutfs_collect")


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
