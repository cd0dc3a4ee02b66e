"""One side of a scoutfs-like cluster conversation, run inside a test host (a namespace):
a TCP connection on the cluster port with scoutfs's socket options and a 10 Hz UDP
heartbeat on the same port. Standard library only; run as a script::

    python cluster_peer.py server ADDR PEER PORT [options]
    python cluster_peer.py client ADDR PEER PORT [options]

The server prints ``listening``, accepts one connection (``--clients N``: N, each served
in a thread of its own) and answers each read with a short reply; the client
writes ``--size`` bytes every ``--interval`` seconds (0: never, an idle connection). Both
print ``connected`` once the connection is up. SIGUSR1 on either: close the connection
with SO_LINGER 0 (the kernel sends a RST). The socket options are scoutfs's
(``kmod/src/net.c``: TCP_USER_TIMEOUT, keepalive with keepidle = timeout - 3 s, keepintvl
1 s, TCP_NODELAY), with the timeout given by ``--user-timeout-ms`` (24000 in scoutfs).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import sys
import threading
import time


def scoutfs_options(sock: socket.socket, user_timeout_ms: int) -> None:
    """What scoutfs sets on a cluster socket, for a given TCP_USER_TIMEOUT."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, user_timeout_ms // 1000 - 3))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms)


def heartbeat(addr: str, peer: str, port: int) -> None:
    """Send a datagram to the peer every 100 ms and read what it sends (daemon threads)."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udp.bind((addr, port))

    def send() -> None:
        n = 0
        while True:
            try:
                udp.sendto(struct.pack(">Q", n), (peer, port))
            except OSError:
                pass  # cut off: the heartbeat goes on
            n += 1
            time.sleep(0.1)  # the heartbeat's period

    def receive() -> None:
        while True:
            udp.recv(64)

    for target in (send, receive):
        threading.Thread(target=target, daemon=True).start()


def drain(conn: socket.socket) -> None:
    """Read and drop what the server replies, until the connection ends."""
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def answer(conn: socket.socket) -> None:
    """The server's side of one connection: a short reply to each read, until it ends."""
    try:
        while conn.recv(65536):
            conn.sendall(b"r" * 20)
    except OSError:
        pass


def serve_many(args) -> int:
    """A server of ``--clients`` connections (a scoutfs server has one per mount)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.addr, args.port))
    listener.listen(args.clients)
    print("listening", flush=True)
    for _ in range(args.clients):
        conn, peer = listener.accept()
        scoutfs_options(conn, args.user_timeout_ms)
        threading.Thread(target=answer, args=(conn,), daemon=True).start()
        print(f"connected {peer[0]}", flush=True)
    signal.pause()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("addr")
    parser.add_argument("peer")
    parser.add_argument("port", type=int)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--user-timeout-ms", type=int, default=24000)
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()
    heartbeat(args.addr, args.peer, args.port)
    if args.role == "server" and args.clients > 1:
        return serve_many(args)
    if args.role == "server":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((args.addr, args.port))
        listener.listen(1)
        print("listening", flush=True)
        conn, _ = listener.accept()
    else:
        conn = socket.socket()
        conn.bind((args.addr, 0))
        deadline = time.monotonic() + 20
        while True:
            try:
                conn.connect((args.peer, args.port))
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # polling for the server's listener
    scoutfs_options(conn, args.user_timeout_ms)

    def reset(signum, frame) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        print("reset", flush=True)
        os._exit(0)

    signal.signal(signal.SIGUSR1, reset)
    print("connected", flush=True)
    try:
        if args.role == "server":
            while True:
                data = conn.recv(65536)
                if not data:
                    return 0
                conn.sendall(b"r" * 20)
        else:
            threading.Thread(target=drain, args=(conn,), daemon=True).start()
            while True:
                if args.interval > 0:
                    conn.sendall(b"m" * args.size)
                    time.sleep(args.interval)  # the conversation's pace
                else:
                    signal.pause()
    except OSError as exc:
        print(f"connection ended: {exc}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
