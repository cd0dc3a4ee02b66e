"""The fast paths of the analyzers' pass over every frame give what the general code
gives: the frame decoder's (:class:`scoutfs_collect.analysis.packets.FrameDecoder`, one
struct call for IPv4 TCP/UDP) is :func:`~scoutfs_collect.analysis.packets.segment`'s
for every link type and kind of frame, cut at every length; the TCP analysis's for the
common in-order segment (:meth:`scoutfs_collect.analysis.tcp.TcpAnalysis._in_order`)
leaves every connection in the state the full Wireshark logic leaves it in, compared
along real captures (tests/data, whose counts tshark's agree with in
test_tcp_incidents) and generated conversations with every kind of segment the
analysis flags."""

from __future__ import annotations

import random
import socket
import struct
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from scoutfs_collect.analysis import packets, tcp
from scoutfs_collect.analysis.packets import Segment
from scoutfs_collect.system.pcap import PcapReader

DATA = Path(__file__).parent / "data"
ACK, PSH = tcp.ACK, 0x08


class Counted(tcp.TcpAnalysis):
    """The analysis as shipped, counting the segments its fast path took."""

    fast = 0

    def _in_order(self, sides, seg) -> bool:
        took = super()._in_order(sides, seg)
        self.fast += took
        return took


class Full(tcp.TcpAnalysis):
    """The analysis without its fast path: every segment through the full logic."""

    def _in_order(self, sides, seg) -> bool:
        return False


def state(analysis: tcp.TcpAnalysis) -> List[Dict[str, Any]]:
    """Everything the analysis knows of each connection, per direction and after each
    segment's closing (:meth:`connections`)."""
    out = []
    for conn in analysis.connections():
        for d in (conn.a, conn.b):
            fields = dict(vars(d))
            fields["events"] = list(d.events)
            out.append(fields)
        out.append({k: v for k, v in vars(conn).items() if k not in ("a", "b")})
    return out


def both(segments: List[Segment], until=None) -> Tuple[Counted, Full]:
    fast, full = Counted(until=until), Full(until=until)
    for i, seg in enumerate(segments):
        fast.feed(seg)
        full.feed(seg)
        if i % 50 == 0:  # the state along the way, not only at the end
            assert [vars(c.a) for c in fast._all.values()] == [vars(c.a) for c in full._all.values()], i
    return fast, full


def frames(pcap: Path) -> List[Segment]:
    reader = PcapReader(pcap, with_data=True)
    return [s for r in reader for s in [tcp.parse(r.time, reader.linktype, r.data)] if s is not None]


@pytest.mark.parametrize("name", ["lossy-port-cooked.pcap", "lossy-port-b-32-vs-33.pcap"])
def test_a_real_capture_gives_the_same_analysis_with_the_fast_path(name):
    segments = frames(DATA / name)
    fast, full = both(segments, until=segments[-1].time - 0.5)
    assert state(fast) == state(full)
    assert fast.fast > len(segments) // 2  # most segments took the fast path


def conversation(rng: random.Random, n: int) -> Iterator[Segment]:
    """A client and a server exchanging data with every irregularity the analysis flags:
    retransmissions (plain, fast, spurious), reordering, lost segments, duplicate ACKs,
    zero windows and probes, keep-alives, window changes, a reused port's new SYN, RST,
    FIN, sequence numbers wrapping; and stamps slightly out of order."""
    c, s = "10.0.0.1:40000", "10.0.0.2:7000"
    seq = {c: rng.randrange(1 << 32), s: rng.randrange(1 << 32)}
    sent: Dict[str, List[Tuple[int, int]]] = {c: [], s: []}
    t = 1000.0
    win = {c: 500, s: 500}

    def seg(src: str, dst: str, sq: int, ln: int, flags: int, window: int, ahead: int = 0) -> Segment:
        return Segment(t, src, dst, int(src.rsplit(":")[1]), int(dst.rsplit(":")[1]), sq & 0xFFFFFFFF,
                       (seq[dst] + ahead) & 0xFFFFFFFF, flags, window, ln)

    yield seg(c, s, seq[c], 0, tcp.SYN, win[c])
    seq[c] += 1
    t += 0.0001
    yield seg(s, c, seq[s], 0, tcp.SYN | ACK, win[s])
    seq[s] += 1
    for _ in range(n):
        t += rng.choice((0.00002, 0.0001, 0.001, 0.02, 1.5)) if rng.random() < 0.2 else 0.00005
        if rng.random() < 0.02:
            t -= 0.00001  # tcpdump on "any": stamped before the frame it follows
        src, dst = (c, s) if rng.random() < 0.5 else (s, c)
        r = rng.random()
        window = win[src]
        if r < 0.62:  # new data, in order
            ln = rng.choice((1, 20, 100, 1448))
            sent[src].append((seq[src], ln))
            yield seg(src, dst, seq[src], ln, ACK | PSH, window)
            seq[src] += ln
        elif r < 0.80:  # a pure ACK
            yield seg(src, dst, seq[src], 0, ACK, window)
        elif r < 0.84 and sent[src]:  # a retransmission of something sent
            sq, ln = rng.choice(sent[src][-5:])
            yield seg(src, dst, sq, ln, ACK | PSH, window)
        elif r < 0.86:  # a segment skipped (lost before the capture), then the next
            seq[src] += rng.choice((1, 100))
            yield seg(src, dst, seq[src], 100, ACK, window)
            seq[src] += 100
        elif r < 0.90:  # the window changes, sometimes to 0
            win[src] = rng.choice((0, 200, 500, 65535))
            yield seg(src, dst, seq[src], 0, ACK, win[src])
        elif r < 0.92:  # keep-alive or zero-window probe (one byte at nextseq - 1 / nextseq)
            yield seg(src, dst, seq[src] - rng.choice((0, 1)), rng.choice((0, 1)), ACK, window)
        elif r < 0.93:  # an ACK of data not (yet) seen from the other side
            yield seg(src, dst, seq[src], 0, ACK, window, ahead=1000)
        elif r < 0.95:  # sequence numbers near the wrap
            seq[src] = (1 << 32) - rng.choice((1, 50, 2000))
            yield seg(src, dst, seq[src], 100, ACK, window)
            seq[src] += 100
        elif r < 0.96:  # a duplicate of the last segment, or the same ACK again
            yield seg(src, dst, seq[src], 0, ACK, window)
            yield seg(src, dst, seq[src], 0, ACK, window)
        elif r < 0.97:  # FIN or RST
            flag = rng.choice((tcp.FIN | ACK, tcp.RST, tcp.RST | ACK))
            yield seg(src, dst, seq[src], 0, flag, window)
            if flag & tcp.FIN:
                seq[src] += 1
        elif r < 0.98:  # the port reused: a new SYN (new sequence number) or the same SYN again
            if rng.random() < 0.5:
                seq[c] = rng.randrange(1 << 32)
            yield seg(c, s, seq[c], 0, tcp.SYN, win[c])
            seq[c] += 1
            t += 0.0001
            yield seg(s, c, seq[s], 0, tcp.SYN | ACK, win[s])
            seq[s] += 1
        else:  # out of order: the next segment before the one before it
            a, b = seq[src], seq[src] + 100
            yield seg(src, dst, b, 100, ACK | PSH, window)
            yield seg(src, dst, a, 100, ACK | PSH, window)
            seq[src] += 200


@pytest.mark.parametrize("seed", range(40))
def test_a_generated_conversation_gives_the_same_analysis_with_the_fast_path(seed):
    segments = list(conversation(random.Random(seed), 3000))
    fast, full = both(segments, until=segments[len(segments) * 3 // 4].time)
    assert state(fast) == state(full)
    assert fast.fast > len(segments) // 10  # the fast path taken, and not only it


def _ip4(proto: int, transport: bytes, options: bytes = b"", frag: int = 0) -> bytes:
    ihl = 5 + len(options) // 4
    head = struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(transport), 1, frag, 64, proto, 0,
                       socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"))
    return head + options + transport


def _ip6(proto: int, transport: bytes) -> bytes:
    src, dst = (socket.inet_pton(socket.AF_INET6, a) for a in ("fd00::1", "fd00::2"))
    return struct.pack(">IHBB16s16s", 6 << 28, len(transport), proto, 64, src, dst) + transport


def ip_packets() -> List[Tuple[int, bytes]]:
    """(ethertype, IP packet) of every kind the decoder tells apart."""
    tcp_head = struct.pack(">HHIIBBHHH", 40000, 7000, 123456, 654321, 0x50, ACK | PSH, 512, 0, 0)
    tcp_opts = struct.pack(">HHIIBBHHH", 7000, 40000, 1, 2, 0x80, ACK, 0, 0, 0) + bytes(12)
    udp = struct.pack(">HHHH", 7000, 7000, 8 + 20, 0) + bytes(20)
    return [(0x0800, _ip4(6, tcp_head + b"x" * 30)), (0x0800, _ip4(6, tcp_opts)), (0x0800, _ip4(17, udp)),
            (0x0800, _ip4(17, udp[:8] + b"hb")), (0x0800, _ip4(6, tcp_head, options=bytes(4))),
            (0x0800, _ip4(6, tcp_head, frag=0x2000)), (0x0800, _ip4(6, tcp_head, frag=8)),
            (0x0800, _ip4(1, bytes(30))), (0x86DD, _ip6(6, tcp_head + b"y")), (0x86DD, _ip6(17, udp)),
            (0x0806, bytes(28)), (0x0800, bytes([0x60]) + _ip4(6, tcp_head)[1:]),
            (0x0800, _ip4(6, struct.pack(">HHIIBBHHH", 1, 2, 3, 4, 0xF0, ACK, 5, 0, 0)))]


def framed(linktype: int, ether: int, ip: bytes) -> bytes:
    if linktype == 1:
        return bytes(12) + struct.pack(">H", ether) + ip
    if linktype == 113:
        return bytes(14) + struct.pack(">H", ether) + ip
    if linktype == 276:
        return struct.pack(">H", ether) + bytes(18) + ip
    if linktype == 0:
        return struct.pack("<I", 2 if ether == 0x0800 else 24) + ip
    return ip  # raw IP (and a link type nobody decodes)


@pytest.mark.parametrize("linktype", [0, 1, 12, 101, 113, 228, 276, 147])
def test_the_frame_decoder_gives_what_segment_gives(linktype):
    decoder = packets.FrameDecoder(linktype)
    frames_ = [framed(linktype, ether, ip) for ether, ip in ip_packets()]
    if linktype == 1:  # one VLAN tag
        frames_ += [bytes(12) + struct.pack(">HHH", 0x8100, 5, 0x0800) + ip for _, ip in ip_packets()]
    decoded = 0
    for frame in frames_:
        for cut in range(len(frame) + 1):
            data = frame[:cut]
            buf = b"pad" + data + b"more bytes after the frame"  # as in a chunk of records
            got = decoder.at(1.5, buf, 3, 3 + cut)
            assert got == packets.segment(1.5, linktype, data), (frame, cut)
            decoded += got is not None
    assert decoded or linktype == 147


def test_the_frame_decoder_gives_what_segment_gives_on_real_captures():
    for name in ("lossy-port-cooked.pcap", "lossy-port-b-32-vs-33.pcap"):
        reader = PcapReader(DATA / name, with_data=True)
        for r in reader:
            assert packets.FrameDecoder(reader.linktype).at(r.time, r.data, 0, len(r.data)) == \
                packets.segment(r.time, reader.linktype, r.data)
