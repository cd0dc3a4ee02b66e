"""Node side of a cluster run: the coordinator's commands on stdin (``run --control-stdin``).

The coordinator writes one JSON line per command into the open ssh session, in the wire
format of :mod:`scoutfs_collect.core.stop` (the same the control socket takes):

``{"command": "stop", "type": "peer", "reason": "...", "durable": false}``
    a stop request like any other (``peer``: another node triggered; ``operator``: Ctrl-C
    on the coordinator). The node then stops, persists, packs and exits as on any trigger.
``{"command": "ping", "sent": T}``
    answered with a ``pong`` event (``sent`` = T) on the events file, so the coordinator
    can estimate this node's clock offset from the round trip.

End of input (the coordinator or its ssh connection is gone) is *not* a stop: losing the
coordinator never ends a capture; the node records on until its own trigger.
"""

from __future__ import annotations

import logging
import os
import threading

from scoutfs_collect.core.stop import Ping, parse_command

log = logging.getLogger("scoutfs_collect.cluster")


def handle_line(runner, line: bytes) -> None:
    """Carry out one command line (bad ones are logged and ignored)."""
    if not line.strip():
        return
    try:
        command = parse_command(line)
    except ValueError as exc:
        log.warning("cluster control: %s: %r", exc, line[:200])
        return
    if isinstance(command, Ping):
        runner.events.emit("pong", sent=command.sent)
    else:
        runner.request_stop(command)


def _read(runner, fd: int) -> None:
    # os.read on the descriptor, not sys.stdin: a daemon thread blocked inside a buffered
    # reader holds its lock, and the interpreter aborts on it at exit.
    pending = b""
    try:
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                handle_line(runner, raw)
    except OSError as exc:
        log.info("cluster control: stdin unreadable (%s)", exc)
    log.info("cluster control: the coordinator is gone; recording goes on until a trigger")


def start(runner, fd: int = 0) -> threading.Thread:
    """Read commands from file descriptor ``fd`` (stdin) for ``runner`` on a daemon thread."""
    thread = threading.Thread(target=_read, args=(runner, fd),
                              name="cluster-control", daemon=True)
    thread.start()
    return thread
