"""Trigger ``peer-silence``: fire on this node when its TCP connection to the target
(IP:PORT) stops being answered, so the victim of a partition keeps its own evidence."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from typing import Dict, List, Optional

from scoutfs_collect import FireCallback, Problem, ThreadedTrigger, Wakeup, hookimpl, option
from scoutfs_collect.analysis.tcp import FIN, RST, SYN, Segment, parse
from scoutfs_collect.system import packet_socket
from scoutfs_collect.system.packet_socket import LINKTYPE_ETHERNET, PacketSocket, PacketSocketError

MAX_CONNECTIONS = 64
_U32 = 0xFFFFFFFF


def _after(a: int, b: int) -> bool:
    return 0 < ((a - b) & _U32) < 0x80000000


@dataclasses.dataclass
class _Conn:
    """What we know of one connection from this node to the target."""

    local: str
    last_rx: Optional[float] = None  # the last segment from the target
    snd_max: Optional[int] = None  # the sequence number after our highest byte sent
    peer_ack: Optional[int] = None  # the highest ACK from the target
    unacked_since: Optional[float] = None  # our oldest data not yet acknowledged
    probes: int = 0  # our keep-alive probes since the target last sent anything
    last_probe: Optional[float] = None
    last_empty_seq: Optional[int] = None  # seq of our last segment without data
    connecting: bool = False  # begun by our SYN, nothing from the target yet


class SilenceWatch:
    """The decision, fed with segments as they are seen (``now``: their arrival time).

    :meth:`reason` says why the connection counts as silent, or None; :meth:`next_check`
    when that answer may change with no new segment (the poll timeout)."""

    def __init__(self, target: str, busy_silence: float, probes: int, probe_answer: float,
                 started: float) -> None:
        self.started = started  # when watching began (epoch s): silences start there at most
        self.target = target  # "ip:port"
        self.busy_silence = busy_silence
        self.probes = probes
        self.probe_answer = probe_answer
        self.conns: Dict[str, _Conn] = {}
        self.segments = 0
        self.probes_seen = 0
        self.aborted: Optional[str] = None  # set when we reset a connection left unanswered

    def segment(self, seg: Segment, now: float) -> None:
        if seg.src == self.target:
            local, inbound = seg.dst, True
        elif seg.dst == self.target:
            local, inbound = seg.src, False
        else:
            return
        self.segments += 1
        c = self.conns.get(local)
        if c is None or (not inbound and seg.flags & SYN):
            c = self.conns[local] = _Conn(local, connecting=not inbound and bool(seg.flags & SYN))
            if len(self.conns) > MAX_CONNECTIONS:
                del self.conns[next(iter(self.conns))]
        if inbound:
            self._inbound(c, seg, now)
        else:
            self._outbound(c, seg, now)

    def _inbound(self, c: _Conn, seg: Segment, now: float) -> None:
        c.last_rx, c.probes, c.connecting = now, 0, False
        if seg.flags & (RST | FIN):
            self.conns.pop(c.local, None)
            return
        if seg.flags & 0x10 and (c.peer_ack is None or _after(seg.ack, c.peer_ack)):
            c.peer_ack = seg.ack
        if c.snd_max is not None and c.peer_ack is not None and not _after(c.snd_max, c.peer_ack):
            c.unacked_since = None

    def _outbound(self, c: _Conn, seg: Segment, now: float) -> None:
        if seg.flags & RST:
            silent = self._silent(c, now, ending=True)
            if silent:
                self.aborted = f"{c.local} reset the connection to {self.target}: {silent}"
            self.conns.pop(c.local, None)
            return
        length = seg.length + (1 if seg.flags & (SYN | FIN) else 0)
        if length > 1 or seg.flags & (SYN | FIN):
            end = (seg.seq + length) & _U32
            if c.snd_max is None or _after(end, c.snd_max):
                c.snd_max = end
            if c.unacked_since is None:
                c.unacked_since = now
            return
        probe = (c.peer_ack is not None and seg.seq == (c.peer_ack - 1) & _U32) or \
            (c.snd_max is not None and seg.seq == (c.snd_max - 1) & _U32) or \
            (c.peer_ack is None and c.last_empty_seq == seg.seq)
        c.last_empty_seq = seg.seq
        if probe:
            c.probes += 1
            c.last_probe = now
            self.probes_seen += 1
        elif length == 1:  # one byte of new data
            c.snd_max = (seg.seq + 1) & _U32
            c.unacked_since = c.unacked_since or now
        elif c.snd_max is None:
            c.snd_max = seg.seq

    def _silent(self, c: _Conn, now: float, ending: bool = False) -> Optional[str]:
        """Why ``c`` counts as silent now, or None; ``ending``: we are resetting it, so a
        shorter silence (``probe_answer``) with anything unanswered is enough. A connection
        the target never answered (our SYNs only) is no connection yet: never silent."""
        if c.connecting:
            return None
        quiet = now - (c.last_rx if c.last_rx is not None else self.started)
        heard = f"nothing received for {quiet:.1f} s" + ("" if c.last_rx is not None else " (since armed)")
        need = self.probe_answer if ending else self.busy_silence
        if c.unacked_since is not None and now - c.unacked_since >= need and quiet >= need:
            return f"our data unacknowledged for {now - c.unacked_since:.1f} s, {heard}"
        if c.last_probe is not None and c.probes >= (1 if ending else self.probes) and \
                now - c.last_probe >= (0.0 if ending else self.probe_answer) and quiet >= self.probe_answer:
            return f"{c.probes} keep-alive probes unanswered, {heard}"
        return None

    def reason(self, now: float) -> Optional[str]:
        if self.aborted:
            return self.aborted
        for c in self.conns.values():
            why = self._silent(c, now)
            if why:
                return f"connection {c.local} → {self.target} silent: {why}"
        return None

    def next_check(self) -> Optional[float]:
        """The earliest time at which :meth:`reason` may turn true (None: only a segment
        can change it)."""
        times = []
        for c in self.conns.values():
            if c.connecting:
                continue
            if c.unacked_since is not None:
                times.append(max(c.unacked_since, c.last_rx or self.started) + self.busy_silence)
            if c.probes >= self.probes and c.last_probe is not None:
                times.append(c.last_probe + self.probe_answer)
        return min(times) if times else None


class PeerSilenceTrigger(ThreadedTrigger):
    """Fires when this node's TCP connection to the target (IP:PORT) stops being
    answered: the victim of a partition, whom nobody can reach to stop its run, ends it
    itself and keeps the seconds that explain its fence.

    *Busy connection*: our data waited `busy_silence` seconds unacknowledged and nothing
    at all came from the target for as long (a healthy peer acknowledges within
    milliseconds; a peer whose reader stopped still acknowledges: its zero window is not
    silence). *Idle connection*: scoutfs's keep-alives (after keepidle = 21 s idle, one
    a second) got no answer: `probes` probes in a row, the last one waited
    `probe_answer` seconds; with the defaults it fires ~23 s after the last word from
    the target, before TCP_USER_TIMEOUT (24 s) ends the connection. It also fires when
    the kernel resets a connection left unanswered (TCP_USER_TIMEOUT). A healthy idle
    connection answers its keep-alives and never fires.

    Which connection, on each kind of node (it is in the default profile, which runs
    on all of them):
    - *A client*: its mount's connection to the server at IP:PORT.
    - *The server* (IP is this node's own address): the connection of this node's own
      mount to its own server, through `lo`. The other clients' connections are not
      this node's and are not watched: a client that goes away, or no client at all,
      never fires it on the server (the kernel's fencing line does; preflight says so
      in a note).
    - *No connection* (scoutfs not mounted yet, or only our SYNs unanswered because the
      server is not up): nothing to watch, never fires. A connection counts from the
      first segment the target sent on it.
    - *A connection idle for hours*: its keep-alives are answered; never fires.

    It reads packets from a packet socket of its own on the interface the target is
    routed through, with an in-kernel filter `host IP and tcp port PORT` compiled by
    `tcpdump -ddd`, and waits in poll() on it: no capture file, no polling loop. That
    needs an Ethernet-like interface (Ethernet, bond, VLAN, bridge, veth or loopback).
    When the target is routed through another kind (IPoIB, a tunnel) and `interface` is
    `auto`, the trigger does not watch (preflight says why in a note, the manifest's
    details in `not_watching`) and the run ends on its other triggers; an `interface`
    named explicitly must be Ethernet-like.

    Changes on the system: nothing (a packet socket, closed at disarm).
    Overhead: the kernel filters; a few microseconds per cluster segment.
    Requirements: root (CAP_NET_RAW), tcpdump (to compile the filter).
    """

    type_name = "peer-silence"

    @dataclasses.dataclass
    class Options:
        busy_silence: float = option(3.0, "Seconds our data may wait unacknowledged while nothing "
                                          "comes from the target.")
        probes: int = option(2, "Keep-alive probes in a row without an answer that count as silence.")
        probe_answer: float = option(1.0, "Seconds the last probe may wait for its answer "
                                          "(scoutfs's keepintvl).")
        interface: str = option("auto", "Interface to watch; 'auto': the one the target is routed through.")

    def _interface(self) -> str:
        if self.options.interface != "auto":
            return self.options.interface
        return packet_socket.route_interface(self.ctx.target.ip)

    def _expr(self) -> str:
        return f"host {self.ctx.target.ip} and tcp port {self.ctx.target.port}"

    def _not_watching(self, iface: str) -> Optional[str]:
        """Why an interface chosen by ``auto`` cannot be watched (a note, not an error)."""
        kind = packet_socket.interface_type(iface)
        if self.options.interface != "auto" or kind is None or packet_socket.interface_problem(iface) is None:
            return None
        return (f"{self.ctx.target.ip} is routed through {iface}, which is not Ethernet-like "
                f"({packet_socket.describe_type(kind)}); peer-silence does not watch it: this run "
                "ends on its other triggers")

    def preflight(self) -> List[Problem]:
        o = self.options
        problems = [Problem(f"option '{name}' must be more than 0, not {value:g}",
                            f"set {name} to a positive number")
                    for name, value in (("busy_silence", o.busy_silence), ("probes", o.probes),
                                        ("probe_answer", o.probe_answer)) if value <= 0]
        if os.geteuid() != 0:
            problems.append(Problem("peer-silence needs root (a packet socket)", "run as root"))
        if shutil.which("tcpdump") is None:
            problems.append(Problem("tcpdump not found (it compiles the packet filter)",
                                    "dnf install tcpdump (RHEL/Rocky) or apt-get install tcpdump"))
            return problems
        try:
            iface = self._interface()
            skip = self._not_watching(iface)
            if skip:
                problems.append(Problem(skip, fatal=False))
                return problems
            if iface == "lo" and self.options.interface == "auto":
                problems.append(Problem(
                    f"{self.ctx.target.ip} is this node (the server): only this node's own "
                    "connection to it (through lo) is watched, never its clients' connections",
                    fatal=False))
            bad = packet_socket.interface_problem(iface)
            if bad:
                problems.append(Problem(bad, "set interface: to the Ethernet-like interface "
                                             "the cluster traffic uses"))
            else:
                packet_socket.compile_filter(iface, self._expr())
        except PacketSocketError as exc:
            problems.append(Problem(str(exc), "check the target address and the interface option"))
        return problems

    def arm(self, fire: FireCallback) -> None:
        iface = self._interface()
        self.ctx.details["interface"] = iface
        skip = self._not_watching(iface)
        if skip:
            self.ctx.details["not_watching"] = skip
            self.ctx.log.warning("%s: %s", self.ctx.name, skip)
            return
        self._sock = PacketSocket(iface, packet_socket.compile_filter(iface, self._expr()))
        o = self.options
        self.watcher = SilenceWatch(str(self.ctx.target), o.busy_silence, o.probes, o.probe_answer,
                                    time.time())
        super().arm(fire)

    def watch(self, fire: FireCallback, wakeup: Wakeup) -> None:
        w, fd = self.watcher, self._sock.fileno()
        while not wakeup.is_set():
            due = w.next_check()
            timeout = None if due is None else max(0.0, due - time.time()) + 0.001
            if wakeup.wait_readable([fd], timeout):
                now = time.time()
                for frame in self._sock.read():
                    seg = parse(now, LINKTYPE_ETHERNET, frame)
                    if seg is not None:
                        w.segment(seg, now)
            why = w.reason(time.time())
            if why:
                self.ctx.details["fired"] = {"reason": why, "segments": w.segments}
                fire(why)
                return

    def disarm(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is None:  # not watching (or arm failed before the socket)
            return
        try:
            if hasattr(self, "_watcher"):
                super().disarm()
        finally:
            sock.close()
            self._sock = None
            w = self.watcher
            self.ctx.details.update(segments_seen=w.segments, probes_seen=w.probes_seen)


@hookimpl
def scoutfs_collect_register(register):
    register.add_trigger(PeerSilenceTrigger)
