"""One line per packet (``src → dst PROTO len N``) from pcap records, and one summary line
per burst: a 10 ms slot with more than BURST packets is shown as one line; and the
:class:`Segment` of a TCP or UDP frame (:func:`segment`), what analyzers are handed."""

from __future__ import annotations

import dataclasses
import socket
import struct
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

BURST = 20  # packets in one slot above which the slot becomes one summary line
SLOT = 0.01  # seconds
MAX_FLOWS = 64
TCP, UDP = 6, 17
_PROTO = {TCP: "TCP", UDP: "UDP", 1: "ICMP", 58: "ICMPv6"}
# linktype -> offset of the ethertype field and of the network header (None: raw IP)
_LINK = {1: (12, 14), 113: (14, 16), 276: (0, 20), 101: (None, 0), 12: (None, 0), 228: (None, 0)}


@dataclasses.dataclass(frozen=True)
class Packet:
    """What a timeline line says about one captured packet."""

    time: float
    src: str
    dst: str
    proto: str
    length: int

    def text(self) -> str:
        return f"{self.src} → {self.dst} {self.proto} len {self.length}"


def _endpoint(addr: bytes, port: Optional[int]) -> str:
    v6 = len(addr) == 16
    ip = socket.inet_ntop(socket.AF_INET6 if v6 else socket.AF_INET, addr)
    if port is None:
        return ip
    return f"[{ip}]:{port}" if v6 else f"{ip}:{port}"


def link_layer(linktype: Optional[int], data: bytes) -> Tuple[Optional[int], Optional[int]]:
    """``(offset of the network header, ethertype)`` in a frame of ``linktype``: Ethernet
    (one VLAN tag skipped), Linux cooked (SLL, SLL2), BSD loopback or raw IP (ethertype
    None); ``(None, None)`` for another link type. Raises IndexError/struct.error on a
    frame too short to tell."""
    if linktype == 0:  # BSD loopback: 4-byte family in host order
        return 4, None
    if linktype not in _LINK:
        return None, None
    ether_at, net = _LINK[linktype]
    if ether_at is None:
        return net, None
    ether = struct.unpack_from(">H", data, ether_at)[0]
    if ether == 0x8100:  # one VLAN tag
        ether, net = struct.unpack_from(">H", data, net + 2)[0], net + 4
    return net, ether


class Segment(NamedTuple):
    """One TCP segment or UDP datagram of a captured frame (a NamedTuple: one per packet).
    ``src``/``dst``: ``ip:port`` (``[ip]:port`` for IPv6); ``length``: payload bytes, from
    the IP length (a short snaplen does not matter); for UDP (``proto`` 17) ``seq``,
    ``ack``, ``flags`` and ``window`` are 0."""

    time: float
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int  # raw, unscaled
    length: int
    proto: int = TCP

    def text(self) -> str:
        """The timeline's line for it (``src → dst TCP len N``, N the payload here)."""
        return f"{self.src} → {self.dst} {_PROTO[self.proto]} len {self.length}"


_TCP = struct.Struct(">HHIIBBH")  # ports, seq, ack, data offset, flags, window
_UDP = struct.Struct(">HHH")  # ports, length
_IP4 = struct.Struct(">BBHHHBB")  # version/ihl, tos, total length, id, frag, ttl, proto
_ENDPOINTS: Dict[Tuple[bytes, int], str] = {}  # a cluster port has few endpoints


def ip_of(endpoint: str) -> str:
    """``10.0.0.1`` of a :class:`Segment`'s ``10.0.0.1:7000`` (``::1`` of ``[::1]:7000``)."""
    host = endpoint.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


def _cached_endpoint(addr: bytes, port: int) -> str:
    text = _ENDPOINTS.get((addr, port))
    if text is None:
        if len(_ENDPOINTS) > 4096:
            _ENDPOINTS.clear()
        text = _ENDPOINTS[(addr, port)] = _endpoint(addr, port)
    return text


def segment(time: float, linktype: Optional[int], data: bytes) -> Optional[Segment]:
    """The TCP segment or UDP datagram of a captured frame, or None (neither over IP, a
    fragment, or cut before the end of its header)."""
    try:
        net, ether = link_layer(linktype, data)
        if net is None or (ether is not None and ether not in (0x0800, 0x86DD)):
            return None
        version = data[net] >> 4
        if version == 4:
            vihl, _tos, total, _id, frag, _ttl, proto = _IP4.unpack_from(data, net)
            if frag & 0x3FFF:
                return None
            header = (vihl & 0x0F) * 4
            src, dst = data[net + 12:net + 16], data[net + 16:net + 20]
            payload = total - header
        elif version == 6:
            proto, header, payload = data[net + 6], 40, struct.unpack_from(">H", data, net + 4)[0]
            src, dst = data[net + 8:net + 24], data[net + 24:net + 40]
        else:
            return None
        at = net + header
        if proto == TCP:
            sport, dport, seq, ack, off, flags, window = _TCP.unpack_from(data, at)
            length = payload - (off >> 4) * 4
        elif proto == UDP:
            sport, dport, _len = _UDP.unpack_from(data, at)
            seq = ack = flags = window = 0
            length = payload - 8
        else:
            return None
        if length < 0:
            return None
        return Segment(time, _cached_endpoint(src, sport), _cached_endpoint(dst, dport), sport, dport,
                       seq, ack, flags, window, length, proto)
    except (IndexError, struct.error, ValueError):
        return None


_FLOWS: Dict[bytes, Tuple[str, str, int, int]] = {}  # IPv4 addresses and ports -> endpoints
_new = tuple.__new__


class FrameDecoder:
    """:func:`segment` for the frames of one link type, read in place from a buffer
    (:meth:`at`: no copy of the frame). The common frame, IPv4 without options carrying
    TCP or UDP (over Ethernet without a VLAN tag, Linux cooked, loopback or raw IP), is
    unpacked with one struct call and its endpoints looked up by the 12 bytes of its
    addresses and ports; any other frame goes through :func:`segment`, so the result is
    :func:`segment`'s for every frame."""

    def __init__(self, linktype: Optional[int]) -> None:
        self.linktype = linktype
        ether_at, net = (None, 4) if linktype == 0 else _LINK.get(linktype, (None, None))
        self.net = net
        # ethertype, IP version/IHL, total length, fragment, protocol, then (after the
        # 12 bytes of addresses and ports) TCP seq, ack, data offset, flags, window
        ip_tcp = "BxH2xHxB2x12xIIBBH"
        if net is None:
            self.fast = None
        elif ether_at is None:
            self.fast = struct.Struct(f">{net}x{ip_tcp}" if net else f">{ip_tcp}")
        else:
            pad = net - ether_at - 2
            self.fast = struct.Struct(f">{ether_at}xH{pad}x{ip_tcp}" if ether_at else f">H{pad}x{ip_tcp}")
        self.raw = ether_at is None

    def at(self, time: float, buf: bytes, start: int, end: int) -> Optional[Segment]:
        """:func:`segment` of the frame ``buf[start:end]``."""
        fast = self.fast
        if fast is not None and end - start >= fast.size:
            if self.raw:
                ether, (vihl, total, frag, proto, seq, ack, off, flags, window) = 0x0800, \
                    fast.unpack_from(buf, start)
            else:
                ether, vihl, total, frag, proto, seq, ack, off, flags, window = fast.unpack_from(buf, start)
            if ether == 0x0800 and vihl == 0x45 and not frag & 0x3FFF and (proto == TCP or proto == UDP):
                at = start + self.net + 12
                key = buf[at:at + 12]
                flow = _FLOWS.get(key)
                if flow is None:
                    if len(_FLOWS) > 4096:
                        _FLOWS.clear()
                    sport, dport = struct.unpack_from(">HH", key, 8)
                    flow = _FLOWS[key] = (_cached_endpoint(key[:4], sport), _cached_endpoint(key[4:8], dport),
                                          sport, dport)
                if proto == TCP:
                    length = total - 20 - (off >> 4) * 4
                else:
                    seq = ack = flags = window = 0
                    length = total - 28
                if length >= 0:  # Segment(...) without its Python __new__
                    return _new(Segment, (time, flow[0], flow[1], flow[2], flow[3], seq, ack, flags, window,
                                          length, proto))
        return segment(time, self.linktype, buf[start:end])


def decode(time: float, linktype: Optional[int], data: bytes, length: int) -> Packet:
    """Addresses, ports and protocol of an Ethernet, Linux cooked (SLL, SLL2), loopback
    or raw IP frame; ``?`` fields where the capture is too short or not IP."""
    unknown = Packet(time, "?", "?", f"link{linktype}", length)
    try:
        net, ether = link_layer(linktype, data)
        if net is None:
            return unknown
        if ether is not None and ether not in (0x0800, 0x86DD):
            return dataclasses.replace(unknown, proto=f"ether 0x{ether:04x}")
        version = data[net] >> 4
        if version == 4:
            header = (data[net] & 0x0F) * 4
            proto, src, dst = data[net + 9], data[net + 12:net + 16], data[net + 16:net + 20]
            transport = net + header
        elif version == 6:
            proto, src, dst = data[net + 6], data[net + 8:net + 24], data[net + 24:net + 40]
            transport = net + 40
        else:
            return unknown
        ports: Tuple[Optional[int], Optional[int]] = (None, None)
        if proto in (6, 17) and len(data) >= transport + 4:
            ports = struct.unpack_from(">HH", data, transport)
        name = _PROTO.get(proto, f"proto {proto}")
        return Packet(time, _endpoint(bytes(src), ports[0]), _endpoint(bytes(dst), ports[1]), name, length)
    except (IndexError, struct.error, ValueError, OSError):
        return unknown


@dataclasses.dataclass
class _Flow:
    """One flow's packets in one slot: the first BURST kept, the rest only counted."""

    first: float
    held: List[Packet] = dataclasses.field(default_factory=list)
    count: int = 0
    size: int = 0


def lines(packets: Iterable[Packet]) -> Iterator[Tuple[float, str]]:
    """(time, text) per packet, or one ``burst:`` line for a flow (src, dst, proto) with
    more than BURST packets in one 10 ms slot, in time order. Memory: at most BURST
    packets of MAX_FLOWS flows (the rest of a slot's flows share one "other" flow)."""
    slot: Optional[int] = None
    flows: Dict[str, _Flow] = {}
    for p in packets:
        s = int(p.time // SLOT)
        if s != slot:
            yield from _flush(flows)
            slot, flows = s, {}
        key = f"{p.src} → {p.dst} {p.proto}"
        if key not in flows and len(flows) >= MAX_FLOWS:
            key = "other flows"
        flow = flows.get(key)
        if flow is None:
            flow = flows[key] = _Flow(p.time)
        flow.count += 1
        flow.size += p.length
        if flow.count <= BURST:
            flow.held.append(p)
    yield from _flush(flows)


def _flush(flows: Dict[str, _Flow]) -> Iterator[Tuple[float, str]]:
    out: List[Tuple[float, str]] = []
    for key, flow in flows.items():
        if flow.count <= BURST:
            out += [(p.time, p.text()) for p in flow.held]
        else:
            out.append((flow.first, f"burst: {flow.count} packets, {flow.size} bytes within "
                                    f"{SLOT * 1000:.0f} ms: {key}"))
    out.sort(key=lambda item: item[0])
    yield from out
