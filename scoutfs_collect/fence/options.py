"""The fence hook's options: one parser for the hook itself and for ``fence-hook --check``.

:func:`parse_args` never raises and never stops at the first problem: it returns the
options it could use (the defaults in place of bad ones) and every problem, each with
its fix. The hook runs its agent anyway and logs them; ``--check`` prints them. The
accepted forms are argparse's: ``--grace 5``, ``--grace=5``, unique prefixes of the long
options (``--gr 5``), ``-o VALUE``, ``-oVALUE``; a value may start with ``-``
(``-o -i/root/.ssh/fence_key``). argparse itself only builds the help (``--help``, the
man page, shell completion) from :func:`add_arguments`.
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

if TYPE_CHECKING:
    import argparse

DEFAULT_GRACE = 5.0
MAX_GRACE = 25.0  # scoutfs raises an error for a request not serviced within 30 s
DEFAULT_CONFIG = "/etc/scoutfs/scoutfs-fenced.conf"
DEFAULT_REMOTE = "scoutfs-collect"
USAGE = ("scoutfs-collect fence-hook [--grace SECONDS] [-o SSH_OPTIONS] -- AGENT [AGENT_ARGS...]\n"
         "       scoutfs-collect fence-hook --check [--config PATH]")
DESCRIPTION = ("Run by scoutfs-fenced (SCOUTFS_FENCED_RUN) instead of the fence agent: asks "
               "the victim to make its recorder's data durable, then runs AGENT.")
EPILOG = """\
Whatever is wrong before -- (an unknown option, a bad --grace, an -o that does not
split), AGENT still runs, with the same environment, arguments and stdio, and the hook
exits with its status: the victim is asked with the defaults in place of the bad
options, within the default grace at most, and one log line names what was wrong.
Only without -- AGENT the hook fails (exit 2): there is nothing to run.

scoutfs-fenced splits SCOUTFS_FENCED_RUN_ARGS at blanks and keeps quotes as they are:
no blank inside one -o there (-o -i/root/.ssh/fence_key -o -lroot), or put ssh's
options in root's ~/.ssh/config.

--check reads scoutfs-fenced's configuration as scoutfs-fenced does (bash sources it,
SCOUTFS_FENCED_RUN_ARGS split as its unquoted expansion is) and prints every problem,
one line each (FILE:LINE: KEY: what; fix: ...): exit 2 if any, else one "ok" line, 0."""
#: Long options (name -> what it sets); each takes a value unless in FLAGS.
LONG = ("--grace", "--remote-command", "--sysfs-root", "--check", "--config", "--help")
FLAGS = ("--check", "--help", "-h")
UNKNOWN = ": unknown option"
#: Options that make no sense when an agent follows ``--`` (they would not fence).
NOT_WITH_AGENT = ("--check", "--config", "--help")
RUN_ARGS_SPLIT = ("scoutfs-fenced splits SCOUTFS_FENCED_RUN_ARGS at blanks and keeps quotes: no blank "
                  "inside one -o (-o -i/root/.ssh/fence_key -o -lroot) or ssh options in root's "
                  "~/.ssh/config")


@dataclasses.dataclass
class ArgProblem:
    """One bad argument: what is wrong (naming it) and how to fix it."""

    what: str
    fix: str


@dataclasses.dataclass
class HookArgs:
    """The hook's command line: the options it can use and every problem found."""

    grace: float = DEFAULT_GRACE
    ssh_options: List[str] = dataclasses.field(default_factory=list)
    remote_command: str = DEFAULT_REMOTE
    sysfs_root: Optional[str] = None  # None: scoutfs.sysfs.DEFAULT_ROOT
    agent: Optional[List[str]] = None  # after --; None without --
    help: bool = False
    check: bool = False
    config: str = DEFAULT_CONFIG
    problems: List[ArgProblem] = dataclasses.field(default_factory=list)


def grace_seconds(value: str) -> float:
    """``--grace``'s value; ValueError saying what is accepted."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_GRACE:  # also refuses nan
        raise ValueError(f"--grace {value!r}: seconds, more than 0 and at most {MAX_GRACE:g}")
    return seconds


def _set_grace(args: HookArgs, value: str) -> None:
    args.grace = grace_seconds(value)


def _set_ssh(args: HookArgs, value: str) -> None:
    try:
        args.ssh_options.extend(shlex.split(value))
    except ValueError as exc:
        raise ValueError(f"-o {value!r}: {exc} (the option is dropped)") from None


_SETTERS: Dict[str, Callable[[HookArgs, str], None]] = {
    "--grace": _set_grace, "-o": _set_ssh,
    "--remote-command": lambda a, v: setattr(a, "remote_command", v),
    "--sysfs-root": lambda a, v: setattr(a, "sysfs_root", v),
    "--config": lambda a, v: setattr(a, "config", v),
}
_FIXES = {"--grace": "--grace SECONDS, e.g. --grace 5", "-o": RUN_ARGS_SPLIT}


def _option(word: str) -> Tuple[Optional[str], Optional[str], Optional[ArgProblem]]:
    """(option name, value attached to it, problem) for one word before ``--``."""
    if word.startswith("--") and len(word) > 2:
        given, eq, value = word.partition("=")
        names = [n for n in LONG if n == given] or [n for n in LONG if n.startswith(given)]
        if len(names) == 1:
            return names[0], (value if eq else None), None
        if names:
            return None, None, ArgProblem(f"{given}: ambiguous option", f"one of {', '.join(names)}")
        import difflib

        near = difflib.get_close_matches(given, LONG, n=1)
        fix = f"did you mean {near[0]}?" if near else f"remove it (options: {', '.join(LONG[:3])}, -o)"
        return None, None, ArgProblem(f"{given}{UNKNOWN}", fix)
    if word in ("-h", "-o"):
        return ("--help" if word == "-h" else word), None, None
    if word.startswith("-o"):
        return "-o", word[2:], None
    if word.startswith("-") and len(word) > 1:
        return None, None, ArgProblem(f"{word}{UNKNOWN}", "remove it (short options: -o, -h)")
    return None, None, ArgProblem(f"{word!r}: unexpected argument (before --)",
                                  f"a value split off its option? {RUN_ARGS_SPLIT}")


def parse_args(options: List[str], agent: Optional[List[str]]) -> HookArgs:
    """The hook's ``options`` (what is before ``--``) and its ``agent`` (after it; None
    without ``--``). Never raises: problems are returned in ``HookArgs.problems``, the
    defaults kept in place of bad values; with any problem and an agent, the grace is at
    most the default (a broken configuration never delays fencing more than usual)."""
    args = HookArgs(agent=agent)
    given = set()
    words = list(options)
    i = 0
    while i < len(words):
        name, value, problem = _option(words[i])
        i += 1
        if problem is not None:
            if problem.what.endswith(UNKNOWN) and "=" not in words[i - 1] and i < len(words) \
                    and not words[i].startswith("-"):  # its value: no argument stands alone here
                problem.what = f"{words[i - 1]} {words[i]}{UNKNOWN}"
                i += 1
            args.problems.append(problem)
            continue
        assert name is not None
        given.add(name)
        if name in FLAGS:
            if value is not None:
                args.problems.append(ArgProblem(f"{name}={value}: {name} takes no value", f"just {name}"))
            setattr(args, name.lstrip("-"), True)
            continue
        if value is None:
            if i == len(words):
                args.problems.append(ArgProblem(f"{name}: missing its value", "give it one or remove it"))
                continue
            value = words[i]
            i += 1
        try:
            _SETTERS[name](args, value)
        except ValueError as exc:
            args.problems.append(ArgProblem(str(exc), _FIXES.get(name, "")))
    if agent:
        args.problems += [ArgProblem(f"{name}: not with -- AGENT (the hook would not fence)",
                                     f"remove {name} from the hook's arguments")
                          for name in NOT_WITH_AGENT if name in given]
    elif "--config" in given and not args.check:
        args.problems.append(ArgProblem("--config: only with --check", "add --check"))
    if args.problems and agent:
        args.grace = min(args.grace, DEFAULT_GRACE)
    return args


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The fence hook's options for help, the man page and shell completion (also the
    main parser's ``fence-hook``); :func:`parse_args` is what parses them."""
    import argparse

    def grace(value: str) -> float:
        try:
            return grace_seconds(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p.add_argument("--grace", type=grace, default=DEFAULT_GRACE, metavar="SECONDS",
                   help=f"most seconds the agent may be delayed, ssh connection included (default "
                        f"{DEFAULT_GRACE:g}, at most {MAX_GRACE:g})")
    p.add_argument("-o", dest="ssh_options", action="append", default=[], metavar="SSH_OPTIONS",
                   help="options for ssh, split like a shell would, e.g. -o -i/root/.ssh/fence_key "
                        "(repeatable)")
    p.add_argument("--remote-command", default=DEFAULT_REMOTE, metavar="PATH",
                   help="scoutfs-collect on the victim (default: scoutfs-collect on its PATH)")
    p.add_argument("--sysfs-root", metavar="DIR",
                   help="where the request's reason is read: DIR/*/fence/RID/reason "
                        "(default /sys/fs/scoutfs)")
    p.add_argument("--check", action="store_true",
                   help="check scoutfs-fenced's configuration (--config) instead: every problem, "
                        "one line each; exit 2 if any")
    p.add_argument("--config", default=DEFAULT_CONFIG, metavar="PATH",
                   help=f"the configuration --check reads (default {DEFAULT_CONFIG})")


def help_parser() -> argparse.ArgumentParser:
    """The parser whose help ``fence-hook --help`` prints."""
    import argparse
    import textwrap

    p = argparse.ArgumentParser(prog="scoutfs-collect fence-hook", usage=USAGE,
                                description=textwrap.fill(DESCRIPTION, 86),
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("agent", nargs=argparse.REMAINDER, metavar="-- AGENT [AGENT_ARGS...]",
                   help="the site's real fence agent and its arguments, run with the same "
                        "environment once the victim is durable or the grace is over")
    return p
