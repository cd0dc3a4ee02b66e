"""Node side of a cluster run: the coordinator's commands on stdin (``run --control-stdin``).

One line per command, written by the coordinator into the open ssh session:

``stop TYPE REASON``
    fire a trigger of type ``TYPE`` (``peer``: another node triggered; ``operator``:
    Ctrl-C on the coordinator) with that reason. The node then stops, packs and exits
    as on any trigger.
``ping T``
    answer with a ``pong`` event (``sent`` = T) on the events file, so the coordinator
    can estimate this node's clock offset from the round trip.

End of input (the coordinator or its ssh connection is gone) is *not* a stop: losing the
coordinator never ends a capture; the node records on until its own trigger.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("scoutfs_collect.cluster")
STOP_TYPES = ("peer", "operator")


def handle_line(runner, line: str) -> None:
    """Carry out one command line (unknown ones are logged and ignored)."""
    words = line.strip().split(" ", 2)
    if not words or not words[0]:
        return
    if words[0] == "stop" and len(words) >= 2 and words[1] in STOP_TYPES:
        reason = words[2] if len(words) > 2 else f"stopped by the cluster coordinator ({words[1]})"
        runner.fire(words[1], words[1], reason)
    elif words[0] == "ping" and len(words) == 2:
        try:
            runner.events.emit("pong", sent=float(words[1]))
        except ValueError:
            log.warning("cluster control: bad ping %r", line.strip())
    else:
        log.warning("cluster control: unknown command %r", line.strip())


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
                handle_line(runner, raw.decode("utf-8", "replace"))
    except OSError as exc:
        log.info("cluster control: stdin unreadable (%s)", exc)
    log.info("cluster control: the coordinator is gone; recording goes on until a trigger")


def start(runner, fd: int = 0) -> threading.Thread:
    """Read commands from file descriptor ``fd`` (stdin) for ``runner`` on a daemon thread."""
    thread = threading.Thread(target=_read, args=(runner, fd),
                              name="cluster-control", daemon=True)
    thread.start()
    return thread
