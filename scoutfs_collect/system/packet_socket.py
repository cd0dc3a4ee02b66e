"""A Linux packet socket on one interface with an in-kernel BPF filter compiled by
``tcpdump -ddd``: the kernel hands over only the packets the filter accepts, and a reader
waits in poll() on the socket (no polling loop, no capture file).

Ethernet-like interfaces only (ARPHRD type 1, Ethernet, bonds, VLANs, bridges,
veths; or 772, loopback): their frames carry the 14-byte Ethernet header the compiled
filter expects (pcap link type 1).
"""

from __future__ import annotations

import ctypes
import re
import socket
import struct
import subprocess
from typing import Iterator, List, Optional, Tuple

from scoutfs_collect.system.netif import interface_type

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
LINKTYPE_ETHERNET = 1
_ETHER_LIKE = {1, 772}  # ARPHRD_ETHER, ARPHRD_LOOPBACK
_KINDS = {32: "InfiniBand (IPoIB)", 512: "PPP", 768: "IPIP tunnel", 776: "SIT tunnel",
          778: "GRE tunnel", 65534: "no link header: tun, WireGuard"}  # linux/if_arp.h


class PacketSocketError(OSError):
    """The interface, the filter or the socket cannot be had; the text says which."""


def route_interface(ip: str) -> str:
    """The interface the kernel routes ``ip`` through (``ip route get``; ``lo`` for a
    local address)."""
    try:
        done = subprocess.run(["ip", "route", "get", ip], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PacketSocketError(f"cannot run ip route get {ip}: {exc}") from None
    m = re.search(r"\bdev (\S+)", done.stdout)
    if done.returncode or not m:
        raise PacketSocketError(f"no route to {ip}: {(done.stderr or done.stdout).strip()}")
    return m.group(1)


def interface_problem(iface: str) -> Optional[str]:
    """Why ``iface`` (of this thread's network namespace: :mod:`.netif`) cannot be
    watched, or None."""
    kind = interface_type(iface)
    if kind is None:
        return f"no network interface {iface!r}"
    if kind not in _ETHER_LIKE:
        return f"interface {iface} is not Ethernet-like ({describe_type(kind)})"
    return None


def describe_type(kind: int) -> str:
    """``InfiniBand (IPoIB), type 32``: an ARPHRD type for a message."""
    return f"{_KINDS[kind]}, type {kind}" if kind in _KINDS else f"type {kind}"


def compile_filter(iface: str, expr: str, tcpdump: str = "tcpdump") -> List[Tuple[int, int, int, int]]:
    """``tcpdump -ddd -i IFACE EXPR`` as (code, jt, jf, k) instructions."""
    try:
        done = subprocess.run([tcpdump, "-ddd", "-i", iface, expr], capture_output=True, text=True,
                              timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PacketSocketError(f"cannot run {tcpdump} -ddd: {exc}") from None
    lines = done.stdout.split("\n")
    try:
        count = int(lines[0])
        program = [tuple(int(v) for v in line.split()) for line in lines[1:count + 1]]
    except (ValueError, IndexError):
        program = []
    if done.returncode or not program or any(len(ins) != 4 for ins in program):
        raise PacketSocketError(f"{tcpdump} cannot compile {expr!r} on {iface}: {done.stderr.strip()}")
    return program  # type: ignore[return-value]


class PacketSocket:
    """A non-blocking packet socket bound to ``iface`` with ``program`` attached."""

    def __init__(self, iface: str, program: List[Tuple[int, int, int, int]]) -> None:
        self.iface = iface
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            code = b"".join(struct.pack("HBBI", *ins) for ins in program)
            self._buf = ctypes.create_string_buffer(code)  # kept alive with the socket
            fprog = struct.pack("HL", len(program), ctypes.addressof(self._buf))
            self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            self.sock.bind((iface, ETH_P_ALL))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int = 1024) -> Iterator[bytes]:
        """The frames queued now (at most ``limit``); on loopback each packet is seen
        going out and coming in, so the outgoing copy is skipped there."""
        loopback = self.iface == "lo"
        for _ in range(limit):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            if loopback and addr[2] == PACKET_OUTGOING:
                continue
            yield data

    def close(self) -> None:
        self.sock.close()
