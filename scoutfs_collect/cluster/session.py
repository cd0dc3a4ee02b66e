"""The run sessions: one long-lived ssh session per node on ClusterShell's event loop.

Each node runs ``scoutfs-collect run ... --events-file /dev/stdout --control-stdin``; its
lifecycle events arrive here line by line (``ev_read``). The first ``triggered`` of a
node's own trigger makes :class:`RunSessions` write a ``peer`` stop request (the JSON line
of :mod:`scoutfs_collect.core.stop`) into every other
node's session (no new connection: the sessions are open already). Ctrl-C/SIGTERM on the
coordinator arrive as a line on a pipe read by the same loop and stop every node with
type ``operator``. A ``ping`` every ``PING_INTERVAL`` seconds feeds the clock-offset
estimate and shows the node is still there.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from typing import Callable, Dict, List, Optional, Set

from ClusterShell.Event import EventHandler
from ClusterShell.NodeSet import NodeSet
from ClusterShell.Worker.Worker import StreamWorker

from scoutfs_collect.cluster.state import PEER_TYPES, ClusterRun, NodeState, Origin, Trigger
from scoutfs_collect.core.events import EventLog
from scoutfs_collect.core.stop import Ping, StopRequest, encode_command

log = logging.getLogger("scoutfs_collect.cluster")
PING_INTERVAL = 30.0
FIRST_PINGS = (0.1, 0.3, 0.6, 1.0)  # seconds after a node armed: a few early samples
SSH_LOST = 255  # ssh's own exit status: the connection is gone


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class RunSessions(EventHandler):
    """Handler of every node's run session, of the signal pipe and of the ping timers."""

    def __init__(self, task, run: ClusterRun, events: EventLog,
                 on_change: Optional[Callable[[str], None]] = None) -> None:
        super().__init__()
        self.task = task
        self.run = run
        self.events = events
        self.workers: Dict[str, object] = {}
        self.on_change = on_change or (lambda message: None)
        self.stopping = False
        self._signal_r, self._signal_w = os.pipe()
        self._old_signals: Dict[int, object] = {}
        self._early_pinged: Set[int] = set()

    # -- starting ---------------------------------------------------------------------

    def start(self, commands: Dict[str, str]) -> None:
        """One session per node: a worker per node (a write reaches that node only), or in
        tree mode one worker for a node set (a write reaches all of it)."""
        for nodes, command in commands.items():
            worker = self.task.shell(command, nodes=nodes, handler=self, stderr=True)
            for node in NodeSet(nodes):
                self.run.nodes[node].status = "running"
                self.workers[node] = worker
        reader = StreamWorker(handler=self, autoclose=True)  # never keeps the loop alive
        reader.set_reader("signal", self._signal_r)
        self.task.schedule(reader)
        self._signal_worker = reader
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_signals[sig] = signal.signal(sig, self._on_signal)
        self._ping_timer = self.task.timer(PING_INTERVAL, self, interval=PING_INTERVAL, autoclose=True)

    def _on_signal(self, signum, frame) -> None:
        # Runs between bytecodes of the event loop: only note it; the loop reads the pipe.
        try:
            os.write(self._signal_w, f"{signal.Signals(signum).name}\n".encode())
        except OSError:
            pass

    def close(self) -> None:
        """Give the signals back and close the pipe (after the loop ended)."""
        for sig, old in self._old_signals.items():
            signal.signal(sig, old)
        self._old_signals.clear()
        for fd in (self._signal_r, self._signal_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # -- ClusterShell events ----------------------------------------------------------

    def ev_read(self, worker, node, sname, msg) -> None:
        text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
        if worker is getattr(self, "_signal_worker", None):
            self.stop_all("operator", f"{text.strip()} on the coordinator ({socket.gethostname()})")
            return
        state = self.run.nodes.get(node)
        if state is None:  # a gateway's own message (tree mode)
            log.warning("%s: %s", node, text.strip())
            return
        received = time.time()
        state.last_heard = received
        if sname == "stderr" or not text.startswith("{"):
            state.note_output(text)
            return
        try:
            event = json.loads(text)
            name, node_time = str(event["event"]), float(event["time"])
        except (ValueError, KeyError, TypeError):
            state.note_output(text)
            return
        state.last_event = name
        state.clock.event(node_time, received)
        handler = getattr(self, f"_on_{name}", None)
        if handler is not None:
            handler(state, event, node_time, received)

    def ev_hup(self, worker, node, rc) -> None:
        state = self.run.nodes.get(node)
        if state is None or worker is getattr(self, "_signal_worker", None):
            return
        if state.finished:
            state.exit = rc if rc is not None else state.exit
            state.status = "ok" if state.remote_archive else "failed"
            if not state.remote_archive:
                state.error = state.error or self._last_words(state, "ended without an archive")
        elif rc == SSH_LOST or rc is None:
            state.status = "lost"
            heard = (f"last heard {time.time() - state.last_heard:.1f} s ago ('{state.last_event}')"
                     if state.last_heard else "never heard from")
            state.error = f"session lost mid-run ({heard})"
            self.events.emit("error", node=node, message=state.error)
        else:
            state.exit = rc
            state.status = "failed"
            state.error = self._last_words(state, f"exited {rc} before it finished")
            self.events.emit("error", node=node, message=state.error)
        self.on_change(f"{node}: {state.status}" + (f" ({state.error})" if state.error else ""))

    def _write(self, nodes: List[str], line: bytes) -> None:
        """Write to the sessions of ``nodes`` (each shared worker once)."""
        workers = {id(self.workers[n]): self.workers[n] for n in nodes}
        for worker in workers.values():
            worker.write(line)

    def ev_timer(self, timer) -> None:
        self._write(running_nodes(self.run), encode_command(Ping(sent=time.time())))

    # -- node events ------------------------------------------------------------------

    def _on_armed(self, state: NodeState, event, node_time: float, received: float) -> None:
        state.armed = node_time
        self.events.emit("node_armed", node=state.name)
        self.on_change(f"{state.name}: armed")
        worker = self.workers[state.name]
        if id(worker) not in self._early_pinged:  # tree mode: once per shared worker
            self._early_pinged.add(id(worker))
            for delay in FIRST_PINGS:
                self.task.timer(delay, _OnePing(worker), autoclose=True)
        running = [n for n in self.run.nodes.values() if n.status == "running"]
        if running and all(n.armed is not None for n in running) and self.run.times["armed"] is None:
            self.run.times["armed"] = received
            self.events.emit("armed", nodes=[n.name for n in running])
            self.on_change(f"armed: all {len(running)} node(s) recording")

    def _on_triggered(self, state: NodeState, event, node_time: float, received: float) -> None:
        trig = Trigger(name=str(event.get("trigger")), type=str(event.get("type")),
                       reason=_one_line(event.get("reason", "")),
                       time=float(event.get("trigger_time", node_time)))
        state.trigger = trig
        if self.run.origin is None and trig.type not in PEER_TYPES:
            self.run.origin = Origin(node=state.name, name=trig.name, type=trig.type,
                                     reason=trig.reason, time=trig.time)
            self.run.times["triggered"] = received
            self.events.emit("triggered", node=state.name, trigger=trig.name, reason=trig.reason)
            self.on_change(f"{state.name}: triggered by {trig.name} ({trig.type}): {trig.reason}")
            self._stop_others(state.name, f"{state.name} triggered {trig.name} ({trig.type}): {trig.reason}")

    def _on_stopped(self, state: NodeState, event, node_time: float, received: float) -> None:
        state.stopped = node_time
        lag = state.stop_lag_ms(self.run.origin, self.run.origin_offset())
        self.events.emit("node_stopped", node=state.name, lag_ms=lag)

    def _on_archive(self, state: NodeState, event, node_time: float, received: float) -> None:
        state.remote_archive = str(event.get("path"))

    def _on_finished(self, state: NodeState, event, node_time: float, received: float) -> None:
        state.finished = True
        state.exit = event.get("exit_status")

    def _on_error(self, state: NodeState, event, node_time: float, received: float) -> None:
        log.warning("%s: %s: %s", state.name, event.get("plugin"), event.get("message"))

    def _on_pong(self, state: NodeState, event, node_time: float, received: float) -> None:
        try:
            state.clock.pong(float(event["sent"]), node_time, received)
        except (KeyError, TypeError, ValueError):
            pass

    # -- stopping ---------------------------------------------------------------------

    def _stop_others(self, origin: str, reason: str) -> None:
        # In tree mode the origin shares the others' worker and sees the line too; it has
        # triggered already, so the line is only logged there.
        self._write([n for n in running_nodes(self.run) if n != origin],
                    encode_command(StopRequest(type="peer", reason=_one_line(reason))))

    def stop_all(self, type_name: str, reason: str) -> None:
        """Stop every node still running (Ctrl-C/SIGTERM on the coordinator)."""
        if self.run.origin is None:
            self.run.origin = Origin(node=None, name=type_name, type=type_name, reason=reason,
                                     time=time.time())
            self.run.times["triggered"] = self.run.origin.time
            self.events.emit("triggered", node=None, trigger=type_name, reason=reason)
            self.on_change(f"{reason}: stopping every node")
        elif self.stopping:
            self.on_change("already stopping; waiting for the nodes to pack")
            return
        self.stopping = True
        self._write(running_nodes(self.run),
                    encode_command(StopRequest(type=type_name, reason=_one_line(reason))))

    @staticmethod
    def _last_words(state: NodeState, what: str) -> str:
        tail = [line for line in state.output if line.strip()][-3:]
        return what + (": " + " | ".join(_one_line(t) for t in tail) if tail else "")


class _OnePing(EventHandler):
    """A one-shot timer that pings one node (early clock samples after it armed)."""

    def __init__(self, worker) -> None:
        super().__init__()
        self.worker = worker

    def ev_timer(self, timer) -> None:
        self.worker.write(encode_command(Ping(sent=time.time())))


def running_nodes(run: ClusterRun) -> List[str]:
    return [n.name for n in run.nodes.values() if n.status == "running"]
