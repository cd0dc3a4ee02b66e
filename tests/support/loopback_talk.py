"""A scoutfs-like cluster conversation on 127.0.0.1, for tests and benches that capture
the cluster port on ``lo``: a TCP client and server with scoutfs's socket options
(kmod/src/net.c: TCP_NODELAY, keepalive with idle 21 s and interval 1 s,
TCP_USER_TIMEOUT 24 s), each message sent after the server's 20-byte answer to the one
before (so every message is a segment of its own, as on a cluster), and a 10 Hz UDP
heartbeat both ways on the same port (the quorum address is the cluster address)."""

from __future__ import annotations

import os
import socket
import struct
import threading

HEARTBEAT = 0.1  # s: scoutfs's quorum heartbeat interval
POOL = 32 << 20  # bytes of random message data for fill(), beyond zstd's window


class LoopbackTalk:
    """Client, server and heartbeat on 127.0.0.1:``port``; :meth:`close` ends them."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.client = socket.create_connection(("127.0.0.1", self.port))
        self.server, _ = self.listener.accept()
        for s in (self.client, self.server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 21)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 24000)
        self.udp = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        self.udp[0].bind(("127.0.0.1", self.port))
        self.udp[1].bind(("127.0.0.1", 0))
        self._done = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._serve, self._beat)]
        for t in self.threads:
            t.start()

    def _serve(self) -> None:
        try:
            while self.server.recv(65536):
                self.server.sendall(b"r" * 20)
        except OSError:
            pass

    def _beat(self) -> None:
        n, a, b = 0, self.udp[0], self.udp[1]
        while not self._done.wait(HEARTBEAT):
            a.sendto(struct.pack(">Q", n), b.getsockname())
            b.sendto(struct.pack(">Q", n), a.getsockname())
            n += 1

    def messages(self, count: int, size: int = 1000) -> None:
        """``count`` messages of ``size`` bytes, each after the answer to the one before."""
        for i in range(count):
            self.client.sendall(bytes([i % 251]) * size)
            self.client.recv(65536)

    def fill(self, total_bytes: int, size: int) -> int:
        """Messages of ``size`` random bytes (data that compresses as little as real data
        does) until ``total_bytes`` are sent; returns how many were."""
        sent = 0
        pool = memoryview(os.urandom(POOL))
        while sent < total_bytes:
            at = sent % (POOL - size)
            self.client.sendall(pool[at:at + size])
            self.client.recv(65536)
            sent += size
        return sent

    def close(self) -> None:
        self._done.set()
        for s in (self.client, self.server, self.listener, *self.udp):
            s.close()
        for t in self.threads:
            t.join(5)
