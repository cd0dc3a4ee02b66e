"""Asking the node about to be fenced, over ssh, to make its recorder's data durable.

One ``ssh`` child runs ``scoutfs-collect stop --wait durable`` on the victim; its
``durable after ...`` line is the answer the moment it arrives (the ssh session's
teardown is not waited for), otherwise its exit status (1 not durable in time, 2 no
recorder running, 127 scoutfs-collect not installed there, 255 ssh itself failed) and
the last line it printed. The caller's deadline is absolute: at the deadline the ssh child and
everything it started are killed, whatever they are doing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import signal
import subprocess
import threading
import time
from typing import List, Optional

#: What ``scoutfs-collect stop --wait durable`` prints once the victim's data is durable.
DURABLE_LINE = "durable after"
#: Options always given to ssh before the site's own (-o): never ask for a password.
SSH_BASE = ["-o", "BatchMode=yes"]


@dataclasses.dataclass
class VictimAnswer:
    """How asking the victim ended: ``durable`` is the only good outcome."""

    outcome: str  # durable | not-durable | no-recorder | unreachable | no-answer | error
    seconds: float
    detail: str = ""

    @property
    def durable(self) -> bool:
        return self.outcome == "durable"


def remote_stop_command(remote: str, reason: str, timeout: float) -> str:
    """The command line run on the victim (ssh hands it to the victim's shell)."""
    argv = [remote, "stop", "--wait", "durable", "--timeout", f"{max(timeout, 0.1):.1f}",
            "--type", "fence-hook", "--reason", reason]
    return shlex.join(argv)


def ssh_argv(ip: str, ssh_options: List[str], remaining: float, command: str) -> List[str]:
    """``ssh`` with BatchMode, a connect timeout inside the grace, the site's options."""
    connect = max(1, math.floor(remaining))
    return ["ssh", *SSH_BASE, "-o", f"ConnectTimeout={connect}", *ssh_options, ip, command]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def classify(returncode: int, output: str) -> str:
    """The outcome for an ssh exit status and what it printed."""
    if returncode == 0:
        return "durable"
    if returncode == 255:
        return "unreachable"
    if returncode == 2 and "no scoutfs-collect is running" in output:
        return "no-recorder"
    if returncode == 1:
        return "not-durable"
    return "error"


class VictimCall:
    """``ask()`` in a worker thread; ``wait(deadline)`` returns its answer by the
    deadline at the latest, killing the ssh child if it is still running then. Even a
    bug of ours that hangs the worker cannot hold the caller past the deadline."""

    def __init__(self, argv: List[str]) -> None:
        self.argv = argv
        self.began = time.monotonic()
        self.answer: Optional[VictimAnswer] = None
        self._child: Optional[subprocess.Popen] = None
        self._lock = threading.RLock()  # kill() may run in a signal handler's unwinding
        self._killed = False
        self._answered = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fence-victim", daemon=True)

    def start(self) -> VictimCall:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with self._lock:
                if self._killed:
                    return
                self._child = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, start_new_session=True)
            assert self._child.stdout is not None
            lines: List[str] = []
            for raw in self._child.stdout:  # "durable after ..." ends the wait at once
                lines.append(raw.decode(errors="replace"))
                if lines[-1].startswith(DURABLE_LINE):
                    self._answer(VictimAnswer("durable", time.monotonic() - self.began,
                                              f"victim says: {lines[-1].strip()}"))
            rc = self._child.wait()
            text = "".join(lines)
            said = _last_line(text)
            detail = f"victim says: {said}" if rc in (0, 1, 2) and said else said or f"ssh exit {rc}"
            if not self._killed:
                self._answer(VictimAnswer(classify(rc, text), time.monotonic() - self.began, detail))
        except Exception as exc:
            self._answer(VictimAnswer("error", time.monotonic() - self.began, f"{type(exc).__name__}: {exc}"))

    def _answer(self, answer: VictimAnswer) -> None:
        if self.answer is None:
            self.answer = answer
            self._answered.set()

    def wait(self, deadline: float) -> VictimAnswer:
        """The answer, or ``no-answer`` at ``deadline`` (time.monotonic); ssh is killed
        either way once this returns (after a durable answer it is only closing)."""
        self._answered.wait(max(0.0, deadline - time.monotonic()))
        answer = self.answer
        self.kill()
        if answer is not None:
            return answer
        return VictimAnswer("no-answer", time.monotonic() - self.began,
                            "no answer within the grace: ssh killed")

    def kill(self) -> None:
        with self._lock:
            self._killed = True
            child = self._child
        if child is None or child.poll() is not None:
            return
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            child.wait(2.0)  # reaped: no ssh is left behind
        except subprocess.TimeoutExpired:
            pass
