"""One stop protocol: every way of ending a run posts a :class:`StopRequest` into the run's
:class:`StopInbox`, and the first one decides the trigger the manifest records.

Who posts: a trigger plugin's ``fire(reason)``, the disk-space watchdog, SIGINT/SIGTERM
(type ``operator``), ``scoutfs-collect stop`` over the control socket and the cluster
coordinator over ``run --control-stdin``. The socket and stdin speak the same wire format,
one JSON object per line (:func:`parse_command`, :func:`encode_command`)::

    {"command": "stop", "type": "peer", "reason": "th2 triggered ...", "durable": false}
    {"command": "ping", "sent": 1733472000.25}

``durable`` only asks the run to spend no ``post_trigger_seconds``: after *every* stop the
collectors persist what exists only in memory and the work dir is fsync'ed before the
``durable`` event, so ``durable`` means the same thing whoever waits for it and whenever
they arrive. A ping is answered with a ``pong`` event (the coordinator's clock estimate).

Signal handlers only call :meth:`StopInbox.post_signal`, which takes no lock: it appends to
a deque and writes one byte into a pipe. The main thread turns it into a request the next
time it looks (:meth:`StopInbox.wait`, :meth:`StopInbox.pending`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import signal
import threading
import time
from typing import Callable, Deque, Optional, Tuple, Union

from scoutfs_collect.system.wakeup import Wakeup


@dataclasses.dataclass(frozen=True)
class StopRequest:
    """A request to end the run: the trigger type and reason the manifest records, the
    trigger instance that fired (``name``, "" for requests from outside), and whether
    whoever asked cannot wait for ``post_trigger_seconds`` (``durable``)."""

    type: str = "operator"
    reason: str = "scoutfs-collect stop"
    durable: bool = False
    name: str = ""
    time: float = 0.0  # epoch seconds when it was asked (0: when posted)

    @property
    def trigger_name(self) -> str:
        return self.name or self.type


@dataclasses.dataclass(frozen=True)
class Ping:
    """The cluster coordinator's clock probe: answered with a ``pong`` event."""

    sent: float


Command = Union[StopRequest, Ping]


def parse_command(line: Union[bytes, str]) -> Command:
    """One wire line -> a request; ValueError with a one-line reason for anything else."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"not a JSON line: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError('expected an object: {"command": "stop", ...}')
    command = data.get("command")
    if command == "ping":
        try:
            return Ping(sent=float(data["sent"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError('ping needs a number "sent"') from None
    if command != "stop":
        raise ValueError(f'unknown command {command!r}: expected "stop" or "ping"')
    kind = str(data.get("type") or "operator")
    if not kind.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"bad stop type {kind!r}: letters, digits, - and _ only")
    reason = str(data.get("reason") or "") or StopRequest.reason
    return StopRequest(type=kind, reason=" ".join(reason.split()), durable=bool(data.get("durable")))


def encode_command(command: Command) -> bytes:
    """The wire line for ``command`` (newline included)."""
    if isinstance(command, Ping):
        data: dict = {"command": "ping", "sent": command.sent}
    else:
        data = {"command": "stop", "type": command.type, "reason": command.reason,
                "durable": command.durable}
    return (json.dumps(data) + "\n").encode()


class StopInbox:
    """Where stop requests arrive, from any thread or a signal handler.

    The first request decides the trigger (``first``). Posting wakes the main thread
    *before* anything else happens in the poster's thread, so the rings stop as soon as
    they can; then ``on_first(request)`` runs in the posting thread (the ``triggered``
    event: a cluster coordinator stops the other nodes on it) and :attr:`announced` is
    set, which the runner waits for before it says ``stopped`` (events stay in order).
    Later requests go to ``on_later`` and are counted in ``later``; each one still wakes
    :meth:`wait` (a Ctrl-C during post_trigger_seconds stops at once).
    """

    def __init__(self, on_first: Callable[[StopRequest], None],
                 on_later: Callable[[StopRequest], None]) -> None:
        self._on_first = on_first
        self._on_later = on_later
        self._lock = threading.Lock()  # never taken in a signal handler
        self._signals: Deque[Tuple[int, float]] = collections.deque()
        self._pipe = Wakeup()  # poked for every request and signal; never set
        self.first: Optional[StopRequest] = None
        self.later = 0  # how many requests came after the first
        self.urgent = False  # some request asked for durable data: no post_trigger_seconds
        self.announced = threading.Event()  # on_first(first) has returned

    def post(self, request: StopRequest) -> StopRequest:
        """Record ``request``; the first decides the trigger. Returns the first."""
        if not request.time:
            request = dataclasses.replace(request, time=time.time())
        with self._lock:
            first = self.first is None
            if first:
                self.first = request
            else:
                self.later += 1
            self.urgent = self.urgent or request.durable
        self._wake()  # the main thread first: it stops the rings
        if first:
            try:
                self._on_first(request)
            finally:
                self.announced.set()
        else:
            self._on_later(request)
        assert self.first is not None
        return self.first

    def post_signal(self, signum: int) -> None:
        """From a signal handler: no lock, no allocation beyond a tuple; async-signal-safe
        as far as Python allows (deque.append is atomic, os.write on a non-blocking pipe)."""
        self._signals.append((signum, time.time()))
        self._wake()

    def _wake(self) -> None:
        self._pipe.poke()

    def _drain_signals(self) -> None:
        while self._signals:
            signum, when = self._signals.popleft()
            name = signal.Signals(signum).name
            self.post(StopRequest(type="operator", reason=f"{name} from the operator", time=when))

    def pending(self) -> bool:
        """A stop was asked for (signals received so far included). Never blocks."""
        self._drain_signals()
        return self.first is not None

    def wait(self, timeout: Optional[float]) -> bool:
        """Block until something is posted or ``timeout`` passes; True if something was."""
        self._pipe.wait_readable([], None if timeout is None else max(0.0, timeout))
        woke = self._pipe.drain()
        self._drain_signals()
        return woke

    def close(self) -> None:
        self._pipe.close()
