"""``scoutfs-collect fence-hook``: between scoutfs-fenced and the real fence agent.

scoutfs-fenced (on the quorum leader) runs ``SCOUTFS_FENCED_RUN`` with
``SCOUTFS_FENCED_RUN_ARGS`` for each fence request, with ``SCOUTFS_FENCED_REQ_RID`` and
``SCOUTFS_FENCED_REQ_IP`` in the environment. Configured as::

    SCOUTFS_FENCED_RUN=/usr/bin/scoutfs-collect
    SCOUTFS_FENCED_RUN_ARGS="fence-hook --grace 5 -- /path/to/real-agent ..."

the hook first asks the victim, over ssh to ``SCOUTFS_FENCED_REQ_IP``, to stop its
recorder and answer once its data is durable (``scoutfs-collect stop --wait durable
--type fence-hook``), then runs the real agent with the same environment, arguments
and stdio, and exits with its status (a signal death as the shell reports it, 128+N;
127 if the agent is not found, 126 if it cannot be started).

It never delays fencing past ``--grace`` seconds (ssh connection included), and nothing
wrong with the hook fails a fence: whenever an agent follows ``--``, it runs.

* The victim unreachable, no recorder, a hung recorder, ssh refusing the key, a
  malformed ``SCOUTFS_FENCED_REQ_*`` (then the victim is not asked), an unreadable
  request reason in sysfs (the victim is asked, reason ``?``): one log line, the agent.
* Bad options before ``--`` (unknown, a bad ``--grace``, a missing value, an ``-o`` that
  does not split, ``--help``/``--check``, which do not go with an agent): the victim
  is still asked, with the options that were good and the defaults in place of the
  bad ones, and never longer than the default grace (5 s) whatever ``--grace`` says;
  the log line names every bad option.
* An exception of ours (or our modules failing to import, see
  :mod:`scoutfs_collect.fence.launch`): the victim is not asked (or no longer waited
  for: its ssh is killed), the log line says why, the agent runs.
* SIGTERM, SIGINT or SIGHUP before the agent started: the ssh to the victim is killed
  (nothing is left behind), the agent is NOT started, and the hook exits 128+N, as if
  the agent had been started and the signal passed on to it (it is, once it runs).
  scoutfs-fenced then records an error for the request, as for an agent killed so.

Only with no ``--``, or nothing after it, there is nothing to run: one-line error,
exit 2 (``--help`` and ``--check`` are for exactly that case). One line says what the
hook did and how long it took, on stderr (the daemon's log) and to syslog when
``/dev/log`` exists (``SCOUTFS_COLLECT_SYSLOG`` moves that socket).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from typing import List, Mapping, Optional, Sequence

from scoutfs_collect.fence.launch import NOT_EXECUTABLE, NOT_FOUND, log_line, split_agent
from scoutfs_collect.fence.options import DEFAULT_GRACE, HookArgs, parse_args
from scoutfs_collect.fence.victim import VictimAnswer, VictimCall, remote_stop_command, ssh_argv

#: Kept back from the grace for starting the agent once the victim answered or not.
AGENT_START_MARGIN = 0.1
#: Most bytes of a request's reason read (sysfs gives a few words).
REASON_MAX = 4096
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclasses.dataclass
class FenceRequest:
    """The request scoutfs-fenced is servicing: from its environment and sysfs."""

    rid: str
    ip: str
    reason: str = "?"
    mount: str = "?"
    problem: str = ""  # why the victim cannot be asked ("" if it can)
    reason_problem: str = ""  # why the reason is "?" although the request was found

    def describe(self, leader: str) -> str:
        """The trigger reason recorded in the victim's manifest."""
        return (f"fence-hook on leader {leader} (mount {self.mount}): fencing rid {self.rid} "
                f"at {self.ip}, reason {self.reason}")


def _read_reason(path: str) -> str:
    """A request's reason file: a regular file (sysfs attributes are), at most
    REASON_MAX bytes, never blocking (a fifo, a device); OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        return os.read(fd, REASON_MAX).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)


def read_request(env: Mapping[str, str], sysfs_root: Optional[str]) -> FenceRequest:
    """The request from scoutfs-fenced's environment, its reason and mount from sysfs
    (``sysfs_root`` None: the real one). Whatever sysfs holds, this returns: a reason
    it cannot read is ``?`` with ``reason_problem`` saying why."""
    rid, ip = env.get("SCOUTFS_FENCED_REQ_RID", ""), env.get("SCOUTFS_FENCED_REQ_IP", "")
    req = FenceRequest(rid=rid or "?", ip=ip or "?")
    try:
        req.ip = str(ipaddress.ip_address(ip))
    except ValueError:
        req.problem = f"SCOUTFS_FENCED_REQ_IP is {ip!r}, not an IP address"
    if not rid or not all(c in "0123456789abcdefABCDEF" for c in rid):
        req.problem = req.problem or f"SCOUTFS_FENCED_REQ_RID is {rid!r}, not hex"
        return req
    try:
        from scoutfs_collect.scoutfs import sysfs

        root = sysfs.DEFAULT_ROOT if sysfs_root is None else sysfs_root
        for mount in sysfs.list_mounts(root):
            path = os.path.join(root, mount, "fence", rid, "reason")
            if not os.path.lexists(path):
                continue
            req.mount = mount
            req.reason = _read_reason(path) or "?"
            break
    except Exception as exc:  # noqa: BLE001 - the victim can be asked without the reason
        req.reason_problem = f"reason unreadable: {exc}"
    return req


class HookInterrupted(BaseException):
    """SIGTERM, SIGINT or SIGHUP while the victim was being asked."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Signals:
    """The hook's handling of SIGTERM, SIGINT and SIGHUP. While asking the victim they
    raise :class:`HookInterrupted` (once); from the moment the agent is being started
    they are passed on to it (kept until it exists)."""

    def __init__(self) -> None:
        self.asking = True
        self.call: Optional[VictimCall] = None
        self.child: Optional[subprocess.Popen] = None
        self.pending: Optional[int] = None

    def install(self) -> _Signals:
        for sig in SIGNALS:
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame) -> None:
        if self.asking:
            self.asking = False
            raise HookInterrupted(signum)
        if self.child is None:
            self.pending = self.pending or signum
            return
        try:
            self.child.send_signal(signum)
        except OSError:
            pass

    def started(self, child: subprocess.Popen) -> None:
        self.child = child
        if self.pending is not None:
            self._handle(self.pending, None)


def ask_victim(req: FenceRequest, args: HookArgs, deadline: float, signals: _Signals) -> VictimAnswer:
    """Ask the victim; return by ``deadline`` whatever happens. The ssh call is left in
    ``signals.call`` before it starts, for the caller to kill if interrupted."""
    began = time.monotonic()
    if req.problem:
        return VictimAnswer("error", 0.0, f"{req.problem}: victim not asked")
    remaining = deadline - time.monotonic()
    command = remote_stop_command(args.remote_command, req.describe(socket.gethostname()), remaining)
    call = signals.call = VictimCall(ssh_argv(req.ip, args.ssh_options, remaining, command))
    answer = call.start().wait(deadline)
    answer.seconds = time.monotonic() - began
    return answer


def run_agent(agent: List[str], signals: _Signals) -> int:
    """Run the agent with our environment and stdio; its exit status as a shell gives it.
    SIGTERM, SIGINT and SIGHUP sent to the hook are passed on to the agent."""
    signals.asking = False
    try:
        child = subprocess.Popen(agent)
    except FileNotFoundError:
        log_line(f"agent {agent[0]}: not found")
        return NOT_FOUND
    except OSError as exc:
        log_line(f"agent {agent[0]}: {exc.strerror}")
        return NOT_EXECUTABLE
    signals.started(child)
    while True:
        try:
            rc = child.wait()
            break
        except InterruptedError:
            continue
    return 128 - rc if rc < 0 else rc


def process_age() -> float:
    """Seconds since this process was started (the grace counts Python's start-up too)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22, starttime, in clock ticks since boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _without_agent(options: List[str], agent: Optional[List[str]]) -> int:
    """No agent to run: --help, --check, or a one-line error (exit 2)."""
    args = parse_args(options, agent=None)
    if args.help:
        from scoutfs_collect.fence.options import help_parser

        help_parser().print_help()
        return 0
    if args.problems:
        p = args.problems[0]
        return _usage_error(f"fence-hook: {p.what} ({p.fix})")
    if args.check:
        from scoutfs_collect.fence.check import main as check

        return check(args.config)
    if agent is None:
        return _usage_error("fence-hook: no -- AGENT: fence-hook [OPTIONS] -- AGENT [ARGS...]")
    return _usage_error("fence-hook: no AGENT after --")


def _usage_error(message: str) -> int:
    from scoutfs_collect.core.errors import EXIT_USAGE, one_line

    sys.stderr.write(one_line(f"error: {message} (see scoutfs-collect fence-hook --help)") + "\n")
    return EXIT_USAGE


def main(argv: Sequence[str]) -> int:
    """The ``fence-hook`` command; see the module documentation."""
    started = time.monotonic() - process_age()
    options, agent = split_agent(argv)
    if not agent:
        return _without_agent(options, agent)
    signals = _Signals().install()
    req = FenceRequest(rid="?", ip="?")
    bad = ""
    try:
        try:
            args = parse_args(options, agent)
            if args.problems:
                bad = (f"bad hook arguments ({'; '.join(p.what for p in args.problems)}), asking the "
                       f"victim with the defaults for them and a grace of at most {DEFAULT_GRACE:g} s: ")
            deadline = started + args.grace - AGENT_START_MARGIN
            req = read_request(os.environ, args.sysfs_root)
            answer = ask_victim(req, args, deadline, signals)
        except Exception as exc:  # noqa: BLE001 - a bug of ours must never fail a fence
            if signals.call is not None:
                signals.call.kill()
            why = f"hook failed: {type(exc).__name__}: {exc}; victim not asked or no longer waited for"
            answer = VictimAnswer("error", time.monotonic() - started, why)
        signals.asking = False
    except HookInterrupted as stop:
        if signals.call is not None:
            signals.call.kill()
        log_line(f"{bad}rid {req.rid} at {req.ip}: {signal.Signals(stop.signum).name} after "
                 f"{time.monotonic() - started:.3f} s, before the agent started: ssh to the victim "
                 f"ended, agent not run ({shlex.join(agent)})")
        return 128 + stop.signum
    elapsed = time.monotonic() - started
    reason = f"{req.reason}, {req.reason_problem}" if req.reason_problem else req.reason
    log_line(f"{bad}rid {req.rid} at {req.ip} (reason {reason}): victim {answer.outcome} after "
             f"{elapsed:.3f} s ({answer.detail}); running agent {shlex.join(agent)}")
    return run_agent(agent, signals)
