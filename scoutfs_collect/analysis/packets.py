"""One line per packet (``src → dst PROTO len N``) from pcap records, and one summary line
per burst: a 10 ms slot with more than BURST packets is shown as one line."""

from __future__ import annotations

import dataclasses
import socket
import struct
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

BURST = 20  # packets in one slot above which the slot becomes one summary line
SLOT = 0.01  # seconds
MAX_FLOWS = 64
_PROTO = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6"}
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
