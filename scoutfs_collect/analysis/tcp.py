"""TCP analysis of the cluster port from pcap records: per connection and direction, what
Wireshark's TCP expert analysis (``tcp_analyze_sequence_number`` in
epan/dissectors/packet-tcp.c) and tcptrace would say about it, in one streaming pass.

Definitions, per direction (``fwd``: the direction of the segment; ``rev``: the other),
on raw sequence numbers and the raw (unscaled) window, as Wireshark does:

* *retransmission* (``tcp.analysis.retransmission``): a segment with data, SYN or FIN
  whose sequence number is below the highest ``nextseq`` seen in its direction, unless it
  is a keep-alive or out of order (within the first RTT, or 3 ms, after that highest
  segment); a *fast* one follows >= 2 duplicate ACKs of its sequence number within
  20 ms; a *spurious* one only carries data the peer already acknowledged. All three
  count as retransmissions, as Wireshark counts them. Wireshark's time differences are
  unsigned: a segment stamped *before* the one it is compared with (tcpdump on ``any``
  stamps packets of different CPUs slightly out of order) is neither out of order nor
  fast, but a plain retransmission; and after an ACK beyond what the capture saw of the
  other side (Wireshark 4.0 then sets that side's duplicate-ACK count to -1, which its
  unsigned count takes for >= 2) the retransmission at that ACK within 20 ms is fast.
  *Unanswered* retransmissions: those sent after the other side's last segment (nothing
  came back after them).
* *zero window*: window 0 without SYN, FIN or RST (a 1-byte segment at ``nextseq``
  while the peer's window is 0 is a zero-window *probe* instead).
* *keep-alive*: 0 or 1 byte at ``nextseq - 1``, no SYN/FIN/RST (Linux's zero-window
  probes look the same); it is *unanswered* when no segment comes back before the next
  one, or before the end (``until``, else the last segment) if that is at least
  KEEPALIVE_ANSWER (scoutfs's keepintvl) later.
* *duplicate ACK*: no data, no SYN/FIN/RST, the same window (not 0), ``seq ==
  nextseq`` and the same ACK as the previous segment of its direction.
* RST and FIN counted per direction: the direction names who sent them.

A capture that starts in mid-connection starts with nothing known (``nextseq`` 0:
unknown), so its first segments are never flagged. Silence: the longest time without a
segment in a direction, between segments or from the last one to ``until`` (the
trigger); segments after ``until`` count but do not end a silence.

Memory: per connection a few numbers and at most :data:`EVIDENCE` events per direction;
at most :data:`MAX_CONNECTIONS` connections (beyond, the oldest are forgotten, counted).
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import IO, Deque, Dict, Iterable, List, Optional, Tuple

from scoutfs_collect.analysis import packets
from scoutfs_collect.analysis.packets import TCP, Segment
from scoutfs_collect.system.pcap import PcapReader

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
EVIDENCE = 8  # events kept per direction (the newest)
MAX_CONNECTIONS = 1024
KEEPALIVE_ANSWER = 1.0  # s: a keep-alive this close to the end may yet be answered
OOO_THRESHOLD = 0.003  # Wireshark's out-of-order window when the first RTT is unknown
_U32 = 0xFFFFFFFF


def _gt(a: int, b: int) -> bool:
    """a after b in sequence space (RFC 1982 arithmetic, as Wireshark's GT_SEQ)."""
    return 0 < ((a - b) & _U32) < 0x80000000


def _lt(a: int, b: int) -> bool:
    return _gt(b, a)


def parse(time: float, linktype: Optional[int], data: bytes) -> Optional[Segment]:
    """The TCP segment of a captured frame, or None (not TCP over IP, a fragment, or cut
    before the end of the TCP header)."""
    seg = packets.segment(time, linktype, data)
    return seg if seg is not None and seg.proto == TCP else None


@dataclasses.dataclass(frozen=True)
class TcpEvent:
    """Something the analysis flagged on one segment."""

    time: float
    kind: str  # retransmission, zero-window, dup-ack, keep-alive, rst, fin, syn, ...
    text: str


@dataclasses.dataclass
class Direction:
    """What one side sent (``src`` -> ``dst``) and how it went."""

    src: str
    dst: str
    segments: int = 0
    payload_bytes: int = 0
    first: Optional[float] = None
    last: Optional[float] = None  # the last segment at or before ``until``
    longest_silence: float = 0.0  # seconds, up to ``until``
    silence_from: Optional[float] = None  # when that longest silence began
    retransmissions: int = 0  # as tcp.analysis.retransmission (fast and spurious included)
    unanswered_retransmissions: int = 0  # those after the other side's last segment
    fast_retransmissions: int = 0
    spurious_retransmissions: int = 0
    out_of_order: int = 0
    zero_windows: int = 0
    zero_window_probes: int = 0
    duplicate_acks: int = 0
    keepalives: int = 0
    unanswered_keepalives: int = 0
    lost_segments: int = 0  # "previous segment not captured"
    resets: int = 0
    fins: int = 0
    syns: int = 0
    first_time: Dict[str, float] = dataclasses.field(default_factory=dict)  # kind -> first
    events: Deque[TcpEvent] = dataclasses.field(default_factory=lambda: collections.deque(maxlen=EVIDENCE))
    # Wireshark's per-flow state
    nextseq: int = dataclasses.field(default=0, repr=False)
    nextseq_time: float = dataclasses.field(default=0.0, repr=False)
    lastack: int = dataclasses.field(default=0, repr=False)
    lastack_time: float = dataclasses.field(default=0.0, repr=False)
    window: Optional[int] = dataclasses.field(default=None, repr=False)  # None: G_MAXUINT32
    base_seq: Optional[int] = dataclasses.field(default=None, repr=False)
    maxseqtobeacked: int = dataclasses.field(default=0, repr=False)
    dupacks: int = dataclasses.field(default=0, repr=False)
    last_flags: int = dataclasses.field(default=0, repr=False)  # _KA/_ZWP of its last segment
    keepalive_pending: Optional[float] = dataclasses.field(default=None, repr=False)  # its time

    def silence_until(self, until: float) -> float:
        """Seconds from this side's last segment (at or before ``until``) to ``until``."""
        return until - self.last if self.last is not None else 0.0

    def _note(self, time: float, kind: str, text: str) -> None:
        self.first_time.setdefault(kind, time)
        self.events.append(TcpEvent(time, kind, f"{self.src} → {self.dst} {text}"))


_KA, _ZWP = 1, 2  # last_flags bits: the segment was a keep-alive / zero-window probe


@dataclasses.dataclass
class Connection:
    """One TCP connection (a SYN with a new sequence number on the same ports starts a
    new one): its two directions, ``a`` being the side seen sending first."""

    a: Direction
    b: Direction
    first: float
    last: float
    syn_time: Optional[float] = None  # the newest SYN (without ACK)
    first_rtt: Optional[float] = None  # SYN to the first ACK after it

    def direction(self, src: str) -> Direction:
        return self.a if self.a.src == src else self.b

    @property
    def reset_by(self) -> List[str]:
        """The endpoints that sent a RST."""
        return [d.src for d in (self.a, self.b) if d.resets]

    @property
    def closed_by(self) -> List[str]:
        """The endpoints that sent a FIN, the first one first."""
        sent = [d for d in (self.a, self.b) if d.fins]
        return [d.src for d in sorted(sent, key=lambda d: d.first_time["fin"])]


class TcpAnalysis:
    """Feed it segments in capture order (:meth:`feed_frame` or :meth:`feed`), then read
    :meth:`connections`. ``port``: only segments from or to it (None: every one);
    ``until``: the trigger's time, where silences end (None: the last segment)."""

    def __init__(self, port: Optional[int] = None, until: Optional[float] = None) -> None:
        self.port = port
        self.until = until
        self.frames = 0
        self.last_time = 0.0  # of the newest segment fed
        self.forgotten = 0  # connections dropped beyond MAX_CONNECTIONS
        self._live: Dict[Tuple[str, str], Connection] = {}
        self._all: collections.OrderedDict[int, Connection] = collections.OrderedDict()
        # (src, dst) -> (connection, that direction, the other) of every live connection
        self._sides: Dict[Tuple[str, str], Tuple[Connection, Direction, Direction]] = {}

    def feed_frame(self, time: float, linktype: Optional[int], data: bytes) -> None:
        """One captured frame (anything not TCP is skipped)."""
        self.frames += 1
        seg = parse(time, linktype, data)
        if seg is not None:
            self.feed(seg)

    def feed(self, seg: Segment) -> None:
        """One parsed segment (UDP and those not on ``port`` are skipped)."""
        if seg.proto != TCP or (self.port is not None and self.port not in (seg.sport, seg.dport)):
            return
        if seg.flags & (SYN | FIN | RST | ACK) == ACK:
            sides = self._sides.get((seg.src, seg.dst))
            if sides is not None and self._in_order(sides, seg):
                return
        key = (seg.src, seg.dst) if seg.src < seg.dst else (seg.dst, seg.src)
        conn = self._live.get(key)
        if conn is not None and seg.flags & (SYN | ACK) == SYN:
            fwd = conn.direction(seg.src)
            if fwd.base_seq is not None and seg.seq != fwd.base_seq:
                conn = None  # ports reused: a new connection
            elif fwd.base_seq is not None:
                fwd.nextseq = fwd.maxseqtobeacked  # as Wireshark (issue 17616)
        if conn is None:
            conn = Connection(Direction(seg.src, seg.dst), Direction(seg.dst, seg.src), seg.time, seg.time)
            self._live[key] = conn
            self._sides[(seg.dst, seg.src)] = (conn, conn.b, conn.a)
            self._sides[(seg.src, seg.dst)] = (conn, conn.a, conn.b)  # src == dst: as direction()
            self._all[id(conn)] = conn
            if len(self._all) > MAX_CONNECTIONS:
                _, old = self._all.popitem(last=False)
                self.forgotten += 1
                for k, v in list(self._live.items()):
                    if v is old:
                        del self._live[k]
                        self._sides.pop(k, None)
                        self._sides.pop((k[1], k[0]), None)
        conn.last = seg.time
        self.last_time = max(self.last_time, seg.time)
        fwd = conn.direction(seg.src)
        rev = conn.b if fwd is conn.a else conn.a
        self._count(fwd, seg)
        _analyze(fwd, rev, seg, _ooo_window(conn.first_rtt))
        if seg.flags & (SYN | ACK) == SYN:
            conn.syn_time = seg.time
        elif seg.flags & (SYN | ACK) == ACK and conn.syn_time is not None and conn.first_rtt is None:
            conn.first_rtt = seg.time - conn.syn_time  # Wireshark's ts_first_rtt

    def _in_order(self, sides: Tuple[Connection, Direction, Direction], seg: Segment) -> bool:
        """The common segment, done at less cost; False (nothing changed) for any other.
        Common: ACK without SYN, FIN or RST (the caller checks), at its direction's
        ``nextseq``, neither window 0, not a duplicate-ACK candidate (no data and the same
        window and ACK as before), ACKing nothing beyond what the other side is known to
        have sent, and not only data already ACKed. For such a segment every test of
        :func:`_analyze` and :func:`_retransmission` is false (not a zero-window probe
        nor a keep-alive: seq is ``nextseq``; no lost segment; no retransmission: seq is
        not below ``nextseq``), so what they do reduces to the updates below, in the
        same order (tests/test_fast_paths.py compares the two on captures)."""
        conn, fwd, rev = sides
        t, _, _, _, _, seq, ack, _, window, seglen, _ = seg
        nextseq = fwd.nextseq
        if (seq != nextseq or not nextseq or not window or rev.window == 0
                or (not seglen and window == fwd.window and ack == fwd.lastack)):
            return False
        acked = rev.maxseqtobeacked
        if acked and 0 < ((ack - acked) & _U32) < 0x80000000:
            return False
        lastack = rev.lastack
        if seglen and lastack and not 0 < ((seq + seglen - lastack) & _U32) < 0x80000000:
            return False  # spurious retransmission
        conn.last = t
        if t > self.last_time:
            self.last_time = t
        fwd.segments += 1  # _count, inline (fwd.first is set: fwd sent a segment before)
        fwd.payload_bytes += seglen
        until = self.until
        if until is None or t <= until:
            last = fwd.last
            if last is not None and t - last > fwd.longest_silence:
                fwd.longest_silence, fwd.silence_from = t - last, last
            fwd.last = t
        rev.keepalive_pending = None
        rev.unanswered_retransmissions = 0
        if ack != fwd.lastack:
            fwd.dupacks = 0
        if seglen:  # 0 < seglen < 2**31: seq + seglen is after seq
            fwd.nextseq, fwd.nextseq_time = (seq + seglen) & _U32, t
        if seq == fwd.maxseqtobeacked or not fwd.maxseqtobeacked:
            fwd.maxseqtobeacked = fwd.nextseq
        fwd.window, fwd.lastack, fwd.lastack_time, fwd.last_flags = window, ack, t, 0
        if conn.syn_time is not None and conn.first_rtt is None:
            conn.first_rtt = t - conn.syn_time  # Wireshark's ts_first_rtt
        return True

    def _count(self, fwd: Direction, seg: Segment) -> None:
        fwd.segments += 1
        fwd.payload_bytes += seg.length
        if fwd.first is None:
            fwd.first = seg.time
        if self.until is None or seg.time <= self.until:
            if fwd.last is not None and seg.time - fwd.last > fwd.longest_silence:
                fwd.longest_silence, fwd.silence_from = seg.time - fwd.last, fwd.last
            fwd.last = seg.time

    def connections(self) -> List[Connection]:
        """Every connection seen (the newest MAX_CONNECTIONS), oldest first; silences
        are closed at ``until`` (or each direction's last segment) and keep-alives still
        waiting for an answer count as unanswered."""
        out = list(self._all.values())
        end = self.until if self.until is not None else self.last_time
        for conn in out:
            for d in (conn.a, conn.b):
                if d.keepalive_pending is not None and d.keepalive_pending + KEEPALIVE_ANSWER <= end:
                    d.unanswered_keepalives += 1
                    d.keepalive_pending = None
                tail = d.silence_until(self.until) if self.until is not None else 0.0
                if tail > d.longest_silence:
                    d.longest_silence, d.silence_from = tail, d.last
        return out


def _us(seconds: float) -> int:
    """A time difference in whole microseconds, tcpdump's resolution. Epoch seconds as a
    float carry ~0.2 us of error, so two differences Wireshark finds equal (it subtracts
    integers) can compare either way as floats: a segment 51 us after the highest one
    with a first RTT of 51 us is a retransmission to Wireshark (not below the window),
    and was out of order here."""
    return round(seconds * 1e6)


def _ooo_window(first_rtt: Optional[float]) -> float:
    """Wireshark's out-of-order window: the first RTT, 3 ms when unknown (or 0), and, as
    its unsigned arithmetic has it, unbounded when the handshake's ACK was stamped
    before its SYN."""
    if not first_rtt:
        return OOO_THRESHOLD
    return first_rtt if first_rtt > 0 else float("inf")


def _analyze(fwd: Direction, rev: Direction, seg: Segment, ooo: float) -> None:
    """Wireshark's tcp_analyze_sequence_number for one segment, with our counters;
    ``ooo``: the out-of-order window (the first RTT, or OOO_THRESHOLD)."""
    seq, ack, flags, window, seglen, t = seg.seq, seg.ack, seg.flags, seg.window, seg.length, seg.time
    plain = not flags & (SYN | FIN | RST)
    marks = 0
    if fwd.base_seq is None:
        fwd.base_seq = seq if flags & SYN else (seq - 1) & _U32
    rev.keepalive_pending = None  # anything from the peer answers its keep-alive
    rev.unanswered_retransmissions = 0  # ... and its retransmissions
    if flags & RST:
        fwd.resets += 1
        fwd._note(t, "rst", "RST")
    if flags & FIN:
        fwd.fins += 1
        fwd._note(t, "fin", "FIN")
    if flags & SYN:
        fwd.syns += 1
        fwd._note(t, "syn", "SYN+ACK" if flags & ACK else "SYN")
    checked = False
    if seglen == 1 and seq == fwd.nextseq and rev.window == 0:
        marks |= _ZWP
        fwd.zero_window_probes += 1
        fwd._note(t, "zero-window-probe", "zero-window probe")
        checked = True
    if not checked:
        if window == 0 and plain:
            fwd.zero_windows += 1
            fwd._note(t, "zero-window", "window 0")
        if fwd.nextseq and _gt(seq, fwd.nextseq) and not flags & RST:
            fwd.lost_segments += 1
        if seglen in (0, 1) and seq == (fwd.nextseq - 1) & _U32 and plain:
            marks |= _KA
            fwd.keepalives += 1
            if fwd.keepalive_pending is not None:
                fwd.unanswered_keepalives += 1
            fwd.keepalive_pending = t
            fwd._note(t, "keep-alive", "keep-alive")
        same = (seglen == 0 and window and window == fwd.window and seq == fwd.nextseq
                and ack == fwd.lastack and plain)
        if same and rev.last_flags & _KA:
            pass  # keep-alive ACK
        elif (seglen == 0 and window == 0 and window == fwd.window and seq == fwd.nextseq
              and ack == fwd.lastack and rev.last_flags & _ZWP and plain):
            pass  # zero-window probe ACK
        elif same:
            fwd.dupacks = 1 if fwd.dupacks == -1 else fwd.dupacks + 1
            fwd.duplicate_acks += 1
            fwd._note(t, "dup-ack", f"duplicate ACK #{fwd.dupacks} of {ack}")
    if ack != fwd.lastack:
        fwd.dupacks = 0
    if rev.maxseqtobeacked and _gt(ack, rev.maxseqtobeacked) and flags & ACK:
        if _lt(rev.maxseqtobeacked, rev.nextseq):  # Wireshark 4.0 (Debian 12's tshark)
            rev.maxseqtobeacked = rev.nextseq
        else:
            rev.dupacks = -1
    if (seglen > 0 or flags & (SYN | FIN)) and not marks & _KA:
        _retransmission(fwd, rev, seg, ooo)
    nextseq = (seq + seglen + (1 if flags & (SYN | FIN) else 0)) & _U32
    if (_gt(nextseq, fwd.nextseq) or not fwd.nextseq) and not marks & _ZWP:
        fwd.nextseq, fwd.nextseq_time = nextseq, t
    if (seq == fwd.maxseqtobeacked or not fwd.maxseqtobeacked) and not marks & _ZWP:
        fwd.maxseqtobeacked = fwd.nextseq
    fwd.window, fwd.lastack, fwd.lastack_time, fwd.last_flags = window, ack, t, marks


def _retransmission(fwd: Direction, rev: Direction, seg: Segment, ooo: float) -> None:
    seq, seglen, t = seg.seq, seg.length, seg.time
    not_advanced = bool(fwd.nextseq) and _lt(seq, fwd.nextseq)
    if seglen > 1 and (fwd.nextseq - 1) & _U32 == seq:
        not_advanced = False
    kind = ""
    if seglen > 0 and rev.lastack and not _gt((seq + seglen) & _U32, rev.lastack):
        kind = "spurious"
    elif (not_advanced and (rev.dupacks >= 2 or rev.dupacks == -1) and rev.lastack == seq
          and 0 <= _us(t - rev.lastack_time) < 20000):
        kind = "fast"
    elif (not_advanced and 0 <= _us(t - fwd.nextseq_time) < (_us(ooo) if ooo != float("inf") else ooo)
          and fwd.nextseq != (seq + seglen + (1 if seg.flags & (SYN | FIN) else 0)) & _U32):
        fwd.out_of_order += 1
        fwd._note(t, "out-of-order", f"out of order seq {seq}")
        return
    elif not_advanced:
        kind = "plain"
    if not kind:
        return
    fwd.retransmissions += 1
    fwd.unanswered_retransmissions += 1
    if kind == "fast":
        fwd.fast_retransmissions += 1
    elif kind == "spurious":
        fwd.spurious_retransmissions += 1
    what = "retransmission" if kind == "plain" else f"{kind} retransmission"
    fwd._note(t, "retransmission", f"{what} seq {seq} len {seglen}")


def analyze_pcaps(paths: Iterable[Path], port: Optional[int] = None, until: Optional[float] = None,
                  streams: Optional[Iterable[IO[bytes]]] = None) -> TcpAnalysis:
    """:class:`TcpAnalysis` over pcap files (or open ``streams``, e.g. archive members) in
    the order given (a ring's files oldest first), one record at a time."""
    analysis = TcpAnalysis(port, until)
    sources = [PcapReader(Path("pcap"), with_data=True, stream=s) for s in streams] if streams is not None \
        else [PcapReader(Path(p), with_data=True) for p in paths]
    for reader in sources:
        for record in reader:
            analysis.feed_frame(record.time, reader.linktype, record.data)
    return analysis
