"""The fence hook's first step, on the standard library alone.

``scoutfs-collect fence-hook`` comes here before any other module of ours is imported
(:mod:`scoutfs_collect.entry`). :func:`main` imports :mod:`scoutfs_collect.fence.hook`
and hands over to it; should that import fail (a broken install, a module of ours that
raises), one log line says so and the agent after ``--`` is ``exec``'d as it is, with
the same environment, arguments and stdio: the victim is not asked, the fence goes on.

:func:`log_line` and :func:`split_agent` live here so that this fallback and the hook
share them.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from typing import List, Optional, Sequence, Tuple

TAG = "scoutfs-collect fence-hook"
SYSLOG_PRIORITY = 3 * 8 + 4  # LOG_DAEMON, LOG_WARNING
#: The agent could not be found / could not be started (as a shell reports it).
NOT_FOUND, NOT_EXECUTABLE = 127, 126


def split_agent(argv: Sequence[str]) -> Tuple[List[str], Optional[List[str]]]:
    """(the hook's options, the agent and its arguments): split at the first ``--``;
    the agent is None when there is no ``--`` ([] when nothing follows it)."""
    args = list(argv)
    if "--" not in args:
        return args, None
    cut = args.index("--")
    return args[:cut], args[cut + 1:]


def log_line(message: str) -> None:
    """One line on stderr (scoutfs-fenced's log) and to syslog if its socket exists
    (``SCOUTFS_COLLECT_SYSLOG``, default ``/dev/log``; never blocking)."""
    message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    try:
        sys.stderr.write(f"{TAG}: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    address = os.environ.get("SCOUTFS_COLLECT_SYSLOG", "/dev/log")
    if not os.path.exists(address):
        return
    # daemon.warning; never blocking: a full syslog queue must not delay the agent
    record = f"<{SYSLOG_PRIORITY}>{TAG.replace(' ', '-')}[{os.getpid()}]: {message}".encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(record, address)
    except OSError:
        pass


def exec_agent(agent: List[str], why: str) -> int:
    """Log ``why`` and replace this process by the agent; 127/126 if it cannot start."""
    log_line(f"{why}; victim not asked; running agent {shlex.join(agent)}")
    try:
        os.execvp(agent[0], agent)
    except FileNotFoundError:
        log_line(f"agent {agent[0]}: not found")
        return NOT_FOUND
    except OSError as exc:
        log_line(f"agent {agent[0]}: {exc.strerror}")
        return NOT_EXECUTABLE
    return NOT_EXECUTABLE  # not reached: exec returns only by raising


def main(argv: Sequence[str]) -> int:
    """``scoutfs-collect fence-hook ARGV``: the hook, or the agent alone if it cannot load."""
    try:
        from scoutfs_collect.fence import hook
    except KeyboardInterrupt:  # SIGINT before the hook could handle it: no agent, as a shell
        return 128 + 2
    except Exception as exc:  # noqa: BLE001 - any failure of ours: the fence goes on
        why = f"the hook cannot load ({type(exc).__name__}: {exc})"
        _, agent = split_agent(argv)
        if agent:
            return exec_agent(agent, why)
        sys.stderr.write(f"error: {TAG}: {why}\n")
        return 2
    return hook.main(argv)
