"""``scoutfs-collect fence-hook --check [--config PATH]``: scoutfs-fenced's configuration
read as scoutfs-fenced reads it, every problem of the fence hook's set-up on one line.

scoutfs-fenced (scoutfs's ``utils/fenced/scoutfs-fenced``, a bash script) sources its
configuration file (``. "$SCOUTFS_FENCED_CONFIG_FILE"``, default
``/etc/scoutfs/scoutfs-fenced.conf``: shell assignments, quoted as bash quotes), exits
if sourcing returns non-zero or ``test -x "$SCOUTFS_FENCED_RUN"`` fails, then runs
``$SCOUTFS_FENCED_RUN $SCOUTFS_FENCED_RUN_ARGS`` unquoted for each request: split at
``$IFS`` blanks, quotes inside the values kept as they are, words that are pathname
patterns expanded (``nullglob``: to nothing when no file matches), from its working
directory (``/`` under systemd). So this check has bash do the same: source the file in
a bash of its own (the file is run, as scoutfs-fenced runs it), then expand the command
line as scoutfs-fenced does. Lines are found by the last assignment of each key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
from typing import List, Optional, Tuple

from scoutfs_collect.core.errors import EXIT_OK, EXIT_USAGE, one_line
from scoutfs_collect.fence.launch import split_agent
from scoutfs_collect.fence.options import DEFAULT_CONFIG, DEFAULT_GRACE, parse_args

RUN, RUN_ARGS = "SCOUTFS_FENCED_RUN", "SCOUTFS_FENCED_RUN_ARGS"
COMMAND = "scoutfs-collect"
#: The PATH systemd gives a system service (scoutfs-fenced.service sets none).
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
DAEMON_CWD = "/"
SOURCE_TIMEOUT = 10.0
_MARK = "@@scoutfs-collect-fence-check@@"
# Run by bash as scoutfs-fenced runs it: source, then the unquoted expansion it executes
# (with nullglob, set in its loop), and once more without pathname expansion.
_SCRIPT = r"""
SCOUTFS_FENCED_CONFIG_FILE=$1
SCOUTFS_FENCED_DELAY=2
. "$SCOUTFS_FENCED_CONFIG_FILE"
rc=$?
builtin printf '\0%s\0' "$2"
builtin printf '%s\0' "$rc" "${SCOUTFS_FENCED_RUN-}"
shopt -s nullglob
set -- $SCOUTFS_FENCED_RUN $SCOUTFS_FENCED_RUN_ARGS
builtin printf '%s\0' "$#" "$@"
set -f
set -- $SCOUTFS_FENCED_RUN $SCOUTFS_FENCED_RUN_ARGS
builtin printf '%s\0' "$#" "$@"
"""
_ASSIGN = r"^\s*(?:(?:export|declare|typeset|readonly)\s+(?:-\S+\s+)*)?{key}\+?="
_BASH_ERROR = re.compile(r"^(?:.*?): line (\d+): (.*)$")


@dataclasses.dataclass
class ConfigProblem:
    """One problem: where (line 0 when it is not one line's), which key, what, the fix."""

    line: int
    key: str
    what: str
    fix: str

    def render(self, path: str) -> str:
        where = f"{path}:{self.line}" if self.line else path
        return one_line(f"{where}: {self.key}: {self.what}; fix: {self.fix}")


@dataclasses.dataclass
class FencedConfig:
    """What scoutfs-fenced gets from the file: the source status, SCOUTFS_FENCED_RUN as
    ``test -x`` sees it, the command it runs (words), the same without pathname expansion."""

    status: int
    run: str
    words: List[str]
    words_noglob: List[str]
    errors: List[Tuple[int, str]]  # bash's messages while sourcing (line, message)


def assignment_line(text: str, key: str) -> int:
    """The line of the last assignment to ``key`` in ``text``; 0 if none."""
    pattern = re.compile(_ASSIGN.format(key=key))
    lines = [n for n, line in enumerate(text.splitlines(), 1) if pattern.match(line)]
    return lines[-1] if lines else 0


def source(path: str) -> FencedConfig:
    """Source ``path`` with bash as scoutfs-fenced does; OSError/RuntimeError if it cannot."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUTFS_FENCED_")}
    bash = shutil.which("bash") or "/usr/bin/bash"
    proc = subprocess.run([bash, "--noprofile", "--norc", "-c", _SCRIPT, "scoutfs-fenced",
                           os.path.abspath(path), _MARK], env=env, cwd=DAEMON_CWD,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=SOURCE_TIMEOUT)
    errors = []
    for line in proc.stderr.decode(errors="replace").splitlines():
        m = _BASH_ERROR.match(line)
        errors.append((int(m.group(1)), m.group(2)) if m else (0, line))
    out = proc.stdout.decode(errors="replace")
    mark = f"\0{_MARK}\0"
    if mark not in out:
        raise RuntimeError(f"bash ended while sourcing it (status {proc.returncode}; an exit in it?)"
                           + (f": {errors[-1][1]}" if errors else ""))
    fields = out.rsplit(mark, 1)[1].split("\0")
    status, run = int(fields[0]), fields[1]
    n = int(fields[2])
    words = fields[3:3 + n]
    m = int(fields[3 + n])
    return FencedConfig(status, run, words, fields[4 + n:4 + n + m], errors)


def _is_ours(path: str) -> bool:
    return COMMAND in (os.path.basename(path), os.path.basename(os.path.realpath(path)))


def _executable(path: str) -> str:
    """'' if ``path`` (relative to the daemon's cwd) can be run, else why not."""
    full = os.path.join(DAEMON_CWD, path)
    if not os.path.exists(full):
        return "does not exist"
    if os.path.isdir(full) or not os.access(full, os.X_OK):
        return "is not executable"
    return ""


def problems(cfg: FencedConfig, text: str) -> List[ConfigProblem]:
    """Every problem of the hook's set-up in ``cfg`` (``text``: the file, for lines)."""
    run_line, args_line = assignment_line(text, RUN), assignment_line(text, RUN_ARGS)
    out = [ConfigProblem(line, "bash", message, "scoutfs-fenced sources the file with bash: make this "
                                                "line valid bash") for line, message in cfg.errors]
    if cfg.status != 0:
        out.append(ConfigProblem(0, "bash", f"sourcing the file returns status {cfg.status}: scoutfs-fenced "
                                 "exits", "the file's last command must succeed"))
    which = shutil.which(COMMAND) or f"/usr/bin/{COMMAND}"
    if not cfg.run:
        out.append(ConfigProblem(run_line, RUN, "not set: scoutfs-fenced exits", f"{RUN}={which}"))
    elif _executable(cfg.run):
        out.append(ConfigProblem(run_line, RUN, f"{cfg.run!r} {_executable(cfg.run)} "
                                 "(test -x from /): scoutfs-fenced exits", f"{RUN}={which}"))
    elif not _is_ours(cfg.words[0] if cfg.words else cfg.run):
        out.append(ConfigProblem(run_line, RUN, f"{cfg.run!r} is not {COMMAND}: the fence hook does not "
                                 "run", f"{RUN}={which}, and the agent after -- in {RUN_ARGS}"))
    args = cfg.words[1:]
    if args[:1] != ["fence-hook"]:
        out.append(ConfigProblem(args_line, RUN_ARGS, "does not start with fence-hook "
                                 f"({'starts with ' + repr(args[0]) if args else 'empty'})",
                                 f'{RUN_ARGS}="fence-hook --grace {DEFAULT_GRACE:g} -- /path/to/agent ..."'))
        args = args if args[:1] and args[0].startswith("-") else args[1:]
    else:
        args = args[1:]
    if cfg.words != cfg.words_noglob:
        patterns = [w for w in cfg.words_noglob if any(c in w for c in "*?[")]
        out.append(ConfigProblem(args_line, RUN_ARGS, f"{' '.join(patterns)}: pathname pattern, expanded by "
                                 "scoutfs-fenced (to nothing when no file matches)",
                                 "no *, ? or [ in these words"))
    hook_options, agent = split_agent(args)
    out += [ConfigProblem(args_line, RUN_ARGS, p.what, p.fix)
            for p in parse_args(hook_options, agent or ["agent"]).problems]
    fix = f'{RUN_ARGS}="fence-hook --grace {DEFAULT_GRACE:g} -- /path/to/agent ..."'
    if agent is None:
        out.append(ConfigProblem(args_line, RUN_ARGS, "no -- AGENT: the hook has no agent to run, "
                                 "every fence fails", fix))
    elif not agent:
        out.append(ConfigProblem(args_line, RUN_ARGS, "nothing after --: the hook has no agent to run, "
                                 "every fence fails", fix))
    else:
        out += _agent_problems(agent[0], args_line)
    return out


def _agent_problems(name: str, line: int) -> List[ConfigProblem]:
    if "/" not in name:
        if shutil.which(name, path=DAEMON_PATH):
            return []
        return [ConfigProblem(line, RUN_ARGS, f"agent {name!r} not found on scoutfs-fenced's PATH "
                              f"({DAEMON_PATH}): every fence fails", "give the agent's absolute path")]
    why = _executable(name)
    if not why:
        return []
    return [ConfigProblem(line, RUN_ARGS, f"agent {name!r} {why}: every fence fails",
                          "the path of the site's fence agent, executable")]


def main(path: Optional[str]) -> int:
    """Print every problem of scoutfs-fenced's configuration at ``path``: exit 2 if any,
    else one ``ok`` line and 0."""
    path = path or DEFAULT_CONFIG
    try:
        with open(path, "rb") as f:
            text = f.read().decode(errors="replace")
        cfg = source(path)
    except subprocess.TimeoutExpired:
        why = f"sourcing it with bash did not finish within {SOURCE_TIMEOUT:g} s"
    except OSError as exc:
        why = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
    except (RuntimeError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        why = str(exc)
    else:
        why = ""
    if why:
        print(one_line(f"{path}: cannot read it as scoutfs-fenced does: {why}; fix: scoutfs-fenced "
                       "needs a readable file of bash assignments (SCOUTFS_FENCED_CONFIG_FILE)"))
        return EXIT_USAGE
    found = sorted(problems(cfg, text), key=lambda p: p.line)
    for p in found:
        print(p.render(path))
    if found:
        return EXIT_USAGE
    args = parse_args(*split_agent(cfg.words[2:]))
    print(one_line(f"{path}: ok: scoutfs-fenced runs {shlex.join(cfg.words)} (the hook asks the victim "
                   f"within {args.grace:g} s, then runs {args.agent[0] if args.agent else '?'})"))
    return EXIT_OK
