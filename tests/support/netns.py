"""The network namespaces the tests make (test hosts, their switches), their teardown on
every exit path, and what a killed run left of them: one owner for netpair.py,
clusternet.py and testhosts.py. A switch (:func:`make_switch`, :func:`plug`) is a
namespace with a bridge the hosts' veths are ports of.

Each helper names its namespaces ``PREFIX`` + the pid of the process that made them +
``-`` + the rest (``sfc-th-4711-a1``): :func:`remove_leftovers` deletes those whose
owner is gone (a run killed with SIGKILL, a crashed interpreter) and never those of a
concurrent run. :func:`track` runs an owner's ``close`` at interpreter exit and on
SIGTERM (one handler for every owner: the newest closed first, then the signal's
previous handling), until the owner's ``close`` calls :func:`untrack`.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from typing import Callable, List, Optional

Close = Callable[[], None]

_owners: List[Close] = []  # the live owners' close, oldest first
_previous: object = None  # the SIGTERM handler before ours, while ours is installed
_atexit = False


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(*argv: str, check: bool = True, input: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run a command (``ip``, ``nft``, ``nsenter``...), its output captured as text."""
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, input=input)


def make_switch(ns: str) -> None:
    """A switch: the namespace ``ns`` with a bridge ``br0``, up."""
    run("ip", "netns", "add", ns)
    run("ip", "-n", ns, "link", "add", "br0", "type", "bridge")
    run("ip", "-n", ns, "link", "set", "br0", "up")


def plug(switch: str, port: str, ns: str, ifname: str, address: str) -> None:
    """Connect the namespace ``ns`` to ``switch``: a veth pair, ``port`` on the switch's
    bridge and ``ifname`` in ``ns`` with ``address`` (CIDR), both up."""
    run("ip", "-n", switch, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns)
    run("ip", "-n", switch, "link", "set", port, "master", "br0", "up")
    run("ip", "-n", ns, "addr", "add", address, "dev", ifname)
    run("ip", "-n", ns, "link", "set", ifname, "up")


def wait_forwarding(switch: str, ports: int, timeout: float = 10.0) -> None:
    """Return once ``ports`` ports of the switch's bridge forward."""
    deadline = time.monotonic() + timeout
    while run("bridge", "-n", switch, "link", "show", check=False).stdout.count("state forwarding") < ports:
        if time.monotonic() > deadline:
            raise RuntimeError("the switch ports did not start forwarding")
        time.sleep(0.01)  # polling for the bridge ports' state


def namespaces(prefix: str) -> List[str]:
    """The names of the network namespaces starting with ``prefix`` (of any run)."""
    out = run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def pids(ns: str) -> List[int]:
    """Every process in the namespace ``ns``."""
    out = run("ip", "netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def end_processes(ns: str, grace: float = 10.0) -> None:
    """SIGTERM every process in ``ns`` (scoutfs-collect then packs and gives its tracefs
    instance back), SIGKILL what is left after ``grace`` seconds."""
    for pid in pids(ns):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while pids(ns) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the processes to be gone, not a delay
    for pid in pids(ns):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove(ns: str) -> None:
    """End every process in ``ns`` and delete it (the veth ends, bridges and nftables
    tables in it go with it)."""
    end_processes(ns)
    run("ip", "netns", "delete", ns, check=False)


def remove_leftovers(prefix: str) -> List[str]:
    """Delete the namespaces named ``prefix`` + PID + ``-``... whose owner PID is gone."""
    removed = []
    for ns in namespaces(prefix):
        owner = ns[len(prefix):].split("-")[0]
        if owner.isdigit() and not alive(int(owner)):
            remove(ns)
            removed.append(ns)
    return removed


def track(close: Close) -> None:
    """Run ``close`` at interpreter exit and on SIGTERM, until :func:`untrack`. The
    SIGTERM handler is installed from the main thread only (elsewhere: exit only)."""
    global _previous, _atexit
    if not _atexit:
        atexit.register(_close_all)
        _atexit = True
    _owners.append(close)
    try:
        if signal.getsignal(signal.SIGTERM) != _on_sigterm:
            _previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        pass


def set_up(make: Callable[[], None], close: Close) -> None:
    """An owner's set-up: :func:`track` its ``close``, then ``make`` what it owns; if that
    fails, ``close`` what was made and raise."""
    track(close)
    try:
        make()
    except BaseException:
        close()
        raise


def untrack(close: Close) -> None:
    """``close`` has run (an owner calls this at the end of its ``close``); the last
    owner gone, SIGTERM is handled as before the first."""
    if close in _owners:
        _owners.remove(close)
    if not _owners:
        _restore()


def _close_all() -> None:
    for close in reversed(list(_owners)):
        close()
        untrack(close)


def _restore() -> None:
    try:
        if signal.getsignal(signal.SIGTERM) == _on_sigterm:
            signal.signal(signal.SIGTERM, _previous if _previous is not None else signal.SIG_DFL)
    except ValueError:  # not the main thread
        pass


def _on_sigterm(signum, frame) -> None:
    _close_all()
    _restore()  # also when no owner was left to close
    os.kill(os.getpid(), signal.SIGTERM)
