"""Child processes (tcpdump, trace-cmd, ...): the one place that starts, watches and ends them.

Guarantees, whatever happens to the runner:

* argv lists only, never a shell.
* Each child runs in its own session, so a Ctrl-C or hang-up on the terminal reaches
  the runner, which then stops the child in order, instead of killing it mid-write.
* Each child gets ``PR_SET_PDEATHSIG(SIGKILL)``: if the runner is killed (even with
  SIGKILL) the kernel kills the child. The death signal belongs to the *thread* that
  forked, so every child is forked from one long-lived spawner thread that lives as
  long as the runner process.
* A waiter thread notices a child that exits on its own and reports it once.

:func:`run` (a short command to completion, e.g. ``trace-cmd restore`` or ``mount``) gives
the same first three guarantees, and on its timeout kills the command's whole process
group (what it started too), reaps it and raises ``subprocess.TimeoutExpired``.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_spawner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")
_live: set[ChildProcess] = set()
_live_lock = threading.Lock()


def _popen(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """Start ``argv`` from the spawner thread, in a session of its own, with the death signal."""
    def spawn() -> subprocess.Popen:
        return subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, close_fds=True,
                                start_new_session=True, preexec_fn=_die_with_parent(os.getpid()),
                                **kwargs)

    return _spawner.submit(spawn).result()


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class ChildProcess:
    """One external program run by a plugin.

    ``on_unexpected_exit(returncode)`` is called from a waiter thread if the program
    exits before :meth:`stop` or :meth:`send_signal` asked it to.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        stdout: Optional[Path] = None,
        stderr: Optional[Path] = None,
        cwd: Optional[Path] = None,
        on_unexpected_exit: Optional[Callable[[int], None]] = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.stdout_path = stdout
        self.stderr_path = stderr
        self.cwd = cwd
        self.on_unexpected_exit = on_unexpected_exit
        self.popen: Optional[subprocess.Popen] = None
        self.stopping = False
        self.started_at: Optional[float] = None
        self._waiter: Optional[threading.Thread] = None
        self._exited = threading.Event()  # set by the waiter thread the moment it reaps

    @property
    def pid(self) -> Optional[int]:
        return self.popen.pid if self.popen else None

    @property
    def returncode(self) -> Optional[int]:
        return self.popen.poll() if self.popen else None

    def start(self) -> ChildProcess:
        """Start the program; raises OSError (e.g. FileNotFoundError) if it cannot run."""
        self.popen = self._spawn()
        self.started_at = time.time()
        with _live_lock:
            _live.add(self)
        self._waiter = threading.Thread(
            target=self._wait, name=f"wait-{Path(self.argv[0]).name}-{self.pid}", daemon=True
        )
        self._waiter.start()
        log.debug("started pid %s: %s", self.pid, " ".join(self.argv))
        return self

    def _spawn(self) -> subprocess.Popen:
        out = open(self.stdout_path, "ab") if self.stdout_path else subprocess.DEVNULL
        err = open(self.stderr_path, "ab") if self.stderr_path else subprocess.DEVNULL
        try:
            return _popen(self.argv, stdout=out, stderr=err, cwd=self.cwd)
        finally:
            for f in (out, err):
                if f is not subprocess.DEVNULL:
                    f.close()

    def _wait(self) -> None:
        assert self.popen is not None
        code = self.popen.wait()
        self._exited.set()
        with _live_lock:
            _live.discard(self)
        log.debug("pid %s exited with %s", self.pid, code)
        if not self.stopping and self.on_unexpected_exit is not None:
            self.on_unexpected_exit(code)

    def send_signal(self, sig: int = signal.SIGINT) -> None:
        """Ask the program to end (no waiting); its exit is then not 'unexpected'."""
        self.stopping = True
        if self.popen is not None and self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> Optional[int]:
        """Wait up to ``timeout`` seconds for the exit; the return code or None."""
        if self.popen is None:
            return None
        # The waiter thread blocks in waitpid(); its event wakes us the moment the child
        # is reaped (Popen.wait(timeout) would poll with growing sleeps instead).
        if self._exited.wait(timeout):
            return self.popen.returncode
        return None

    def stop(self, sig: int = signal.SIGINT, grace: float = 5.0) -> Optional[int]:
        """Send ``sig``, wait ``grace`` seconds, then SIGTERM, then SIGKILL. The return code."""
        self.send_signal(sig)
        for next_sig, wait_for in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
            code = self.wait(wait_for)
            if code is not None:
                return code
            log.warning("pid %s did not exit; sending %s", self.pid, signal.Signals(next_sig).name)
            self.send_signal(next_sig)
        return self.wait(5.0)


def live_children() -> List[ChildProcess]:
    """Children started here that have not exited yet."""
    with _live_lock:
        return [c for c in _live if c.returncode is None]


def kill_all(grace: float = 2.0) -> None:
    """End every child still running (the runner's last act on every exit path)."""
    children = live_children()
    for child in children:
        child.send_signal(signal.SIGTERM)
    for child in children:
        if child.wait(grace) is None:
            child.send_signal(signal.SIGKILL)
            child.wait(2.0)


def run(argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run a short command to completion (argv list, no shell); output captured as text.

    The command gets the guarantees of :class:`ChildProcess`: forked from the spawner
    thread with ``PR_SET_PDEATHSIG(SIGKILL)`` (it dies with the runner, even a SIGKILLed
    one) and in a session of its own (a Ctrl-C on the terminal does not reach it). After
    ``timeout`` seconds its whole process group (the programs it started too) is
    SIGKILLed and reaped, and ``subprocess.TimeoutExpired`` is raised, as
    ``subprocess.run`` does. Raises OSError (e.g. FileNotFoundError) if it cannot start.
    """
    popen = _popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                   errors="replace")
    with popen:
        try:
            stdout, stderr = popen.communicate(timeout=timeout)
        except BaseException:  # the timeout, or the calling thread interrupted
            _kill_group(popen)
            raise
    return subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)


def _kill_group(popen: subprocess.Popen) -> None:
    """SIGKILL the process group of ``popen`` (its own: it leads a session) and reap the
    leader. Its pid names that group while the leader is unreaped or any member lives
    (the kernel reuses no pid in use as a group id), so the kill cannot hit a stranger."""
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    popen.wait()


def open_files() -> Dict[str, List[int]]:
    """Every path some process has open -> the pids holding it (readlink of /proc/*/fd
    only: nothing is touched). The one scan, used to tell a killed run's leftovers (held
    by nobody) from files in use."""
    out: Dict[str, List[int]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                out.setdefault(os.readlink(f"/proc/{pid}/fd/{fd}"), []).append(int(pid))
            except OSError:
                pass
    return out


def holders_below(path: Path) -> List[int]:
    """The pids (other than ours) with a file at or below ``path`` open."""
    real = os.path.realpath(path)
    pids = {pid for held, holders in open_files().items()
            if held == real or held.startswith(real + os.sep) for pid in holders}
    pids.discard(os.getpid())
    return sorted(pids)
