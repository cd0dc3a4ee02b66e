"""The running instance's control socket: ``scoutfs-collect stop`` asks, the run answers.

While a run holds the host lock it listens on ``RUNTIME/control.sock`` (a unix stream
socket, mode 0600 in the 0700 runtime directory; only root or the run's own user may
talk to it). A client sends one JSON line (the wire format of :mod:`scoutfs_collect.core.stop`, the same the
cluster coordinator writes on ``run --control-stdin``)::

    {"command": "stop", "type": "fence-hook", "reason": "...", "durable": true}

and reads JSON lines back: ``{"event": "accepted", ...}`` at once, then the run's
lifecycle events as they happen (``stopped``, ``durable``, ``finalized``, ``archive``,
``finished``; the ones already past are sent first), until ``finished`` or the run
exits. ``durable`` means every collector's data is on disk and fsync'ed, the ftrace
ring's raw pages included, whoever stopped the run and whenever the client came. The client decides how
long it waits: a stopped (SIGSTOP) run accepts the connection in the kernel but never
answers, and the client's timeout is all that bounds it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from scoutfs_collect.core.stop import StopRequest, encode_command, parse_command
from scoutfs_collect.plugin.api import Wakeup
from scoutfs_collect.system.paths import runtime_dir

log = logging.getLogger("scoutfs_collect.control")
SOCKET_NAME = "control.sock"
#: Lifecycle events a stop client is told about, in the order a run reaches them.
STOP_EVENTS = ("stopped", "durable", "finalized", "archive", "finished")
MAX_REQUEST = 65536
EXIT_NOT_REACHED = 1  # stop: the run did not reach the awaited point in time (or refused)


def socket_path() -> Path:
    return runtime_dir() / SOCKET_NAME


class ControlServer:
    """Listens on the control socket in its own thread; ``on_stop`` is called from it.

    ``publish`` (an EventLog listener) forwards lifecycle events to every connected
    client and remembers them for clients that connect later."""

    def __init__(self, on_stop: Callable[[StopRequest], Dict[str, Any]], path: Optional[Path] = None):
        self.path = path or socket_path()
        self.on_stop = on_stop
        self._lock = threading.Lock()
        self._history: List[Dict[str, Any]] = []
        self._clients: List[socket.socket] = []
        self._wakeup = Wakeup()
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        """Bind (replacing a socket a killed run left: we hold the host lock) and listen."""
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(8)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._wakeup.is_set():
            if not self._wakeup.wait_readable([self._sock.fileno()]):
                continue
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            try:
                self._handle(conn)
            except Exception as exc:  # one bad client must not end the server
                log.error("control socket: %s", exc)
                conn.close()

    def _handle(self, conn: socket.socket) -> None:
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        if uid not in (0, os.geteuid()):
            conn.close()
            return
        conn.settimeout(2.0)
        data = b""
        while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        try:
            request = parse_command(data)
            if not isinstance(request, StopRequest):
                raise ValueError("only stop is taken here")
        except ValueError as exc:
            _send(conn, {"event": "refused", "error": f"bad request: {exc}"})
            conn.close()
            return
        log.info("stop requested over the control socket: %s: %s%s", request.type, request.reason,
                 " (waiting for durable)" if request.durable else "")
        accepted = {"event": "accepted", "time": time.time(), **self.on_stop(request)}
        conn.settimeout(0.5)
        with self._lock:
            for record in [accepted] + self._history:
                if not _send(conn, record):
                    conn.close()
                    return
            if any(r["event"] == "finished" for r in self._history):
                conn.close()
            else:
                self._clients.append(conn)

    def publish(self, record: Dict[str, Any]) -> None:
        if record.get("event") not in STOP_EVENTS:
            return
        with self._lock:
            self._history.append(record)
            self._clients = [c for c in self._clients if _send(c, record)]
            if record["event"] == "finished":
                self._close_clients()

    def _close_clients(self) -> None:
        for conn in self._clients:
            conn.close()
        self._clients = []

    def close(self) -> None:
        """Stop listening, hang up on every client (they see the run is over), unlink."""
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(5.0)
        with self._lock:
            self._close_clients()
        if self._sock is not None:
            self._sock.close()
            try:
                os.unlink(self.path)
            except OSError:
                pass
        self._wakeup.close()


def _send(conn: socket.socket, record: Dict[str, Any]) -> bool:
    try:
        conn.sendall((json.dumps(record, default=str) + "\n").encode())
        return True
    except OSError:
        return False


class NoControlSocket(Exception):
    """No run is listening (none running, or one from before the control socket)."""


def request_stop(request: StopRequest, timeout: Optional[float], path: Optional[Path] = None
                 ) -> Iterator[Dict[str, Any]]:
    """Send ``request`` and yield each event the run reports, until it hangs up or
    ``timeout`` seconds (from now, connecting included) have passed; then it returns.
    Raises NoControlSocket when nothing listens."""
    deadline = None if timeout is None else time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path or socket_path()))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NoControlSocket(str(exc)) from None
        sock.sendall(encode_command(request))
        buf = b""
        while True:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                try:
                    yield json.loads(raw)
                except ValueError:
                    continue
    finally:
        sock.close()


def stop_over_socket(pid: int, kind: str, reason: Optional[str], wait: str, timeout: Optional[float],
                     no_wait: bool, console: Any) -> int:
    """``scoutfs-collect stop`` with ``--reason``/``--type``/``--wait durable``/``--timeout``:
    0 once the run reached ``wait`` (``durable`` or ``finished``; with ``no_wait`` once it
    accepted), 1 if it did not within ``timeout`` or ended first, 2 if nothing listens."""
    from scoutfs_collect.core.errors import EXIT_OK, UsageError

    request = StopRequest(type=kind, reason=reason or StopRequest.reason, durable=wait == "durable")
    began = time.monotonic()
    seen: List[str] = []
    try:
        for record in request_stop(request, timeout):
            event = str(record.get("event"))
            seen.append(event)
            elapsed = time.monotonic() - began
            if event == "refused":
                console.line(f"stop: refused: {record.get('error')}")
                return EXIT_NOT_REACHED
            if event == "accepted":
                trig = record.get("trigger") or {}
                console.line(f"asked scoutfs-collect (pid {pid}) to stop ({record.get('state')}); "
                             f"its trigger: {trig.get('type')}: {trig.get('reason')}")
                if no_wait:
                    return EXIT_OK
            elif event == wait:
                console.line(f"{event} after {elapsed:.3f} s")
                return EXIT_OK
    except NoControlSocket:
        raise UsageError(f"stop: scoutfs-collect (pid {pid}) has no control socket "
                         f"{socket_path()}: too old or not started yet") from None
    except OSError as exc:
        console.line(f"stop: control socket {socket_path()}: {exc}")
        return EXIT_NOT_REACHED
    what = f"got {', '.join(seen)}" if seen else "no answer"
    if timeout is not None and time.monotonic() - began >= timeout:
        console.line(f"stop: not {wait} within {timeout:g} s ({what})")
    else:
        console.line(f"stop: the run ended before it was {wait} ({what})")
    return EXIT_NOT_REACHED
