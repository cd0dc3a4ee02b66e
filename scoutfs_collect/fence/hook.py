"""``scoutfs-collect fence-hook``: between scoutfs-fenced and the real fence agent.

scoutfs-fenced (on the quorum leader) runs ``SCOUTFS_FENCED_RUN`` with
``SCOUTFS_FENCED_RUN_ARGS`` for each fence request, with ``SCOUTFS_FENCED_REQ_RID`` and
``SCOUTFS_FENCED_REQ_IP`` in the environment. Configured as::

    SCOUTFS_FENCED_RUN=/usr/bin/scoutfs-collect
    SCOUTFS_FENCED_RUN_ARGS="fence-hook --grace 5 -- /path/to/real-agent ..."

the hook first asks the victim, over ssh to ``SCOUTFS_FENCED_REQ_IP``, to stop its
recorder and answer once its data is durable (``scoutfs-collect stop --wait durable
--type fence-hook``), then runs the real agent with the same environment, arguments
and stdio, and exits with its status (a signal death as the shell reports it, 128+N).

It never delays fencing past ``--grace`` seconds (ssh connection included): whatever
goes wrong with the victim (unreachable, no recorder, a hung recorder, ssh refusing
the key) or with the hook itself, it logs one line and runs the agent at once. One
line says what it did and how long it took, on stderr (the daemon's log) and to
syslog when ``/dev/log`` exists (``SCOUTFS_COLLECT_SYSLOG`` moves that socket).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import List, Sequence

from scoutfs_collect.core.errors import EXIT_USAGE
from scoutfs_collect.fence.victim import VictimAnswer, VictimCall, remote_stop_command, ssh_argv
from scoutfs_collect.scoutfs import sysfs

TAG = "scoutfs-collect fence-hook"
DEFAULT_GRACE = 5.0
#: Kept back from the grace for starting the agent once the victim answered or not.
AGENT_START_MARGIN = 0.1
SYSLOG_PRIORITY = 3 * 8 + 4  # LOG_DAEMON, LOG_WARNING


@dataclasses.dataclass
class HookArgs:
    """The hook's command line."""

    grace: float
    ssh_options: List[str]
    remote_command: str
    sysfs_root: str
    agent: List[str]


@dataclasses.dataclass
class FenceRequest:
    """The request scoutfs-fenced is servicing: from its environment and sysfs."""

    rid: str
    ip: str
    reason: str = "?"
    mount: str = "?"
    problem: str = ""  # why the victim cannot be asked ("" if it can)

    def describe(self, leader: str) -> str:
        """The trigger reason recorded in the victim's manifest."""
        return (f"fence-hook on leader {leader} (mount {self.mount}): fencing rid {self.rid} "
                f"at {self.ip}, reason {self.reason}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        raise SystemExit(_usage_error(f"{self.prog}: {message}"))


def _usage_error(message: str) -> int:
    sys.stderr.write(f"error: {message} (see scoutfs-collect fence-hook --help)\n")
    return EXIT_USAGE


def _grace(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 25:  # scoutfs raises an error for a request not serviced in 30 s
        raise argparse.ArgumentTypeError(f"--grace {value!r}: seconds, more than 0 and at most 25")
    return seconds


def parse_args(argv: Sequence[str]) -> HookArgs:
    """Options before ``--``, the agent and its arguments after it. SystemExit(2) on bad input."""
    args = list(argv)
    if "--" not in args:
        if any(a in ("-h", "--help") for a in args):
            _parser().print_help()
            raise SystemExit(0)
        raise SystemExit(_usage_error("fence-hook: no -- AGENT: fence-hook [OPTIONS] -- AGENT [ARGS...]"))
    cut = args.index("--")
    ns = _parser().parse_args(args[:cut])
    agent = args[cut + 1:]
    if not agent:
        raise SystemExit(_usage_error("fence-hook: no AGENT after --"))
    try:
        ssh_options = [w for opt in ns.ssh_options for w in shlex.split(opt)]
    except ValueError as exc:
        raise SystemExit(_usage_error(f"fence-hook: -o: {exc}")) from None
    return HookArgs(grace=ns.grace, ssh_options=ssh_options, remote_command=ns.remote_command,
                    sysfs_root=ns.sysfs_root, agent=agent)


USAGE = "scoutfs-collect fence-hook [--grace SECONDS] [-o SSH_OPTIONS] -- AGENT [AGENT_ARGS...]"
DESCRIPTION = ("Run by scoutfs-fenced (SCOUTFS_FENCED_RUN) instead of the fence agent: asks "
               "the victim to make its recorder's data durable, then runs AGENT.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The fence hook's options (also shown by the main parser: --help, man page, completion)."""
    p.add_argument("--grace", type=_grace, default=DEFAULT_GRACE, metavar="SECONDS",
                   help="most seconds the agent may be delayed, ssh connection included (default 5)")
    p.add_argument("-o", dest="ssh_options", action="append", default=[], metavar="SSH_OPTIONS",
                   help="options for ssh, split like a shell would, e.g. -o '-i /root/.ssh/fence -l root'")
    p.add_argument("--remote-command", default="scoutfs-collect", metavar="PATH",
                   help="scoutfs-collect on the victim (default: scoutfs-collect on its PATH)")
    p.add_argument("--sysfs-root", default=sysfs.DEFAULT_ROOT, metavar="DIR",
                   help="where the request's reason is read: DIR/*/fence/RID/reason "
                        f"(default {sysfs.DEFAULT_ROOT})")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="scoutfs-collect fence-hook", usage=USAGE, description=DESCRIPTION)
    add_arguments(p)
    return p


def read_request(env: dict, sysfs_root: str) -> FenceRequest:
    """The request from scoutfs-fenced's environment, its reason and mount from sysfs."""
    rid, ip = env.get("SCOUTFS_FENCED_REQ_RID", ""), env.get("SCOUTFS_FENCED_REQ_IP", "")
    req = FenceRequest(rid=rid or "?", ip=ip or "?")
    try:
        req.ip = str(ipaddress.ip_address(ip))
    except ValueError:
        req.problem = f"SCOUTFS_FENCED_REQ_IP is {ip!r}, not an IP address"
    if not rid or not all(c in "0123456789abcdefABCDEF" for c in rid):
        req.problem = req.problem or f"SCOUTFS_FENCED_REQ_RID is {rid!r}, not hex"
        return req
    for mount in sysfs.list_mounts(sysfs_root):
        path = os.path.join(sysfs_root, mount, "fence", rid, "reason")
        try:
            req.reason = sysfs.read_text(path).strip() or "?"
        except OSError:
            continue
        req.mount = mount
        break
    return req


def log_line(message: str) -> None:
    """One line on stderr (scoutfs-fenced's log) and to syslog if its socket exists."""
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


def ask_victim(req: FenceRequest, args: HookArgs, deadline: float) -> VictimAnswer:
    """Ask the victim; return by ``deadline`` whatever happens."""
    began = time.monotonic()
    if req.problem:
        return VictimAnswer("error", 0.0, f"{req.problem}: victim not asked")
    remaining = deadline - time.monotonic()
    command = remote_stop_command(args.remote_command, req.describe(socket.gethostname()), remaining)
    call = VictimCall(ssh_argv(req.ip, args.ssh_options, remaining, command)).start()
    answer = call.wait(deadline)
    answer.seconds = time.monotonic() - began
    return answer


def run_agent(agent: List[str]) -> int:
    """Run the agent with our environment and stdio; its exit status as a shell gives it.
    SIGTERM, SIGINT and SIGHUP sent to the hook are passed on to the agent."""
    try:
        child = subprocess.Popen(agent)
    except FileNotFoundError:
        log_line(f"agent {agent[0]}: not found")
        return 127
    except OSError as exc:
        log_line(f"agent {agent[0]}: {exc.strerror}")
        return 126

    def forward(signum, _frame) -> None:
        try:
            child.send_signal(signum)
        except OSError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
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
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22, starttime, in clock ticks since boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def main(argv: Sequence[str]) -> int:
    """The ``fence-hook`` command; see the module documentation."""
    started = time.monotonic() - process_age()
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    deadline = started + args.grace - AGENT_START_MARGIN
    req = FenceRequest(rid="?", ip="?")
    try:
        req = read_request(dict(os.environ), args.sysfs_root)
        answer = ask_victim(req, args, deadline)
    except Exception as exc:  # a bug of ours must never turn a fence into a failed one
        why = f"hook failed: {type(exc).__name__}: {exc}"
        answer = VictimAnswer("error", time.monotonic() - started, why)
    elapsed = time.monotonic() - started
    log_line(f"rid {req.rid} at {req.ip} (reason {req.reason}): victim {answer.outcome} after "
             f"{elapsed:.3f} s ({answer.detail}); running agent {shlex.join(args.agent)}")
    return run_agent(args.agent)
