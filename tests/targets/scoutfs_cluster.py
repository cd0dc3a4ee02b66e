"""scoutfs in a target guest: the module, loop devices and mounts, as scoutfs's own test suite
runs several mounts of one filesystem on one host (tests/run-tests.sh: one device-mapper
linear device per mount over the same disks; the guest kernel has no device mapper, so
each mount gets loop devices of its own over the same sparse files).

Also a cut of one client's connection and scoutfs-fenced, for a real fence. Only ever used
inside a guest booted by tools/test-targets.sh (it loads a module, changes the guest's
routing rules and mounts)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from scoutfs_collect.system.kernel_log import KmsgReader
from tests.support.helpers import wait_for

SERVER_STARTING = re.compile(r"scoutfs (f\.[0-9a-f]+\.r\.[0-9a-f]+): server starting at ([0-9.]+):(\d+)")
SYSFS = Path("/sys/fs/scoutfs")
HOLDERS = Path(__file__).resolve().parent / "mount_holders.sh"


def sh(*argv: object, timeout: float = 300) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True,
                          timeout=timeout).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KernelLog:
    """The kernel log as ``dmesg`` shows it (``[seconds] message``), read from /dev/kmsg as
    it grows: one open, then non-blocking reads. The scenario waits on kernel lines with
    10 ms polls; a ``dmesg`` process per poll took one of the emulated guest's two CPUs
    for the whole wait, the fence hook's window included."""

    def __init__(self) -> None:
        self._reader = KmsgReader()  # from the oldest record still in the ring
        self._text = ""

    def text(self) -> str:
        new = [f"[{r.usec / 1e6:12.6f}] {r.text}\n" for r in self._reader.read_available()]
        if new:
            self._text += "".join(new)
        return self._text


_LOG: Optional[KernelLog] = None


def dmesg() -> str:
    """The kernel log so far (the whole buffer, as ``dmesg`` prints it)."""
    global _LOG
    if _LOG is None:
        _LOG = KernelLog()
    return _LOG.text()


def server_starting() -> List[re.Match]:
    return list(SERVER_STARTING.finditer(dmesg()))


def client_port(fs_id: str, ip: str, port: int) -> Optional[int]:
    """The local port of ``fs_id``'s newest connection to the server at ip:port, from the
    kernel's ``client connected A:P -> IP:PORT`` line, or None."""
    pat = re.compile(rf"scoutfs {re.escape(fs_id)}: client connected [0-9.]+:(\d+) -> "
                     rf"{re.escape(ip)}:{port}\b")
    found = pat.findall(dmesg())
    return int(found[-1]) if found else None


@dataclass
class Mount:
    """One mount of the filesystem: its sysfs id (as the kernel prefixes its lines), its
    rid and the local port of its connection to the server."""

    fs_id: str
    path: Path
    rid: str
    local_port: int

    @property
    def sysfs(self) -> Path:
        return SYSFS / self.fs_id


@dataclass
class Cluster:
    ip: str
    port: int
    server: Mount  # quorum slot 0: runs the server, and is a client of it too
    client: Mount  # no quorum slot: a client only


class Undo:
    """Commands to run at the end, last first, each whatever the others did."""

    def __init__(self) -> None:
        self.steps: List[List[object]] = []

    def push(self, *argv: object) -> None:
        self.steps.append(list(argv))

    def run(self) -> List[str]:
        failed = []
        for argv in reversed(self.steps):
            r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                failed.append(f"{' '.join(map(str, argv))}: {r.stderr.strip()}")
        self.steps = []
        return failed


def _mount(undo: Undo, data: str, meta: str, path: Path, options: str, ip: str, port: int) -> Mount:
    before = set(os.listdir(SYSFS))
    path.mkdir()
    sh("mount", "-t", "scoutfs", "-o", f"metadev_path={meta},{options}", data, path)
    # -f: the server may be gone; none when already unmounted (a fence's force unmount);
    # the mount table, not `mountpoint` (a stat of a cut client blocks)
    undo.push("sh", "-c", 'if grep -q " $1 scoutfs " /proc/self/mounts; then umount -f "$1"; fi',
              "unmount", path)
    (fs_id,) = set(os.listdir(SYSFS)) - before
    local = wait_for(lambda: client_port(fs_id, ip, port), 120, f"{fs_id}: client connected")
    return Mount(fs_id, path, (SYSFS / fs_id / "rid").read_text().strip(), local)


@contextlib.contextmanager
def two_mounts(scoutfs_dir: Path, base: Path, keepalive_ms: int) -> Iterator[Cluster]:
    """insmod, sparse files (metadata 20 GB, data 8 GB) in a tmpfs, ``scoutfs mkfs`` with one
    quorum slot, the server mount (quorum_slot_nr=0) and a client mount (no slot), each on
    loop devices of its own over the same files; all undone at the end."""
    undo = Undo()
    try:
        sh("insmod", scoutfs_dir / "scoutfs.ko")
        undo.push("rmmod", "scoutfs")
        disks = base / "disks"
        disks.mkdir()
        sh("mount", "-t", "tmpfs", "-o", "size=1500m", "tmpfs", disks)
        undo.push("umount", disks)
        loops: Dict[str, List[str]] = {"meta": [], "data": []}
        for name, size in (("meta", "20G"), ("data", "8G")):
            sh("truncate", "-s", size, disks / f"{name}.img")
            for _ in range(2):
                loops[name].append(sh("losetup", "-f", "--show", disks / f"{name}.img"))
                undo.push("losetup", "-d", loops[name][-1])
        ip, port = "127.0.0.1", free_port()
        sh(scoutfs_dir / "scoutfs", "mkfs", "-A", "-Q", f"0,{ip},{port}", loops["meta"][0], loops["data"][0])
        before = len(server_starting())
        opts = f"tcp_keepalive_timeout_ms={keepalive_ms}"
        server = _mount(undo, loops["data"][0], loops["meta"][0], base / "server",
                        f"quorum_slot_nr=0,{opts}", ip, port)
        wait_for(lambda: server_starting()[before:], 120, "scoutfs: server starting at")
        client = _mount(undo, loops["data"][1], loops["meta"][1], base / "client", opts, ip, port)
        yield Cluster(ip, port, server, client)
    except BaseException:
        undo.run()
        raise
    failed = undo.run()
    if failed:  # a mount left behind: say what held it
        holders = subprocess.run(["sh", str(HOLDERS), str(base)], capture_output=True, text=True, timeout=300)
        raise AssertionError(f"teardown failed: {failed}\n{holders.stdout}{holders.stderr}")


@contextlib.contextmanager
def cut_client(cluster: Cluster) -> Iterator[None]:
    """Lose every TCP segment the server sends to the client mount from now on (its
    reconnections too), as a cut link does; the server mount's own connection stays.

    The guest kernel has no netfilter (tools/targets/guest.config), so no nftables: routing
    rules do it (FIB rules match ipproto, sport and dport since 4.17): the server's
    segments from its port are blackholed on output unless they go to the server mount's
    own connection. The local-table rule (priority 0) is moved behind them for the time
    of the cut. The client's segments still reach the server (a one-way cut): what the
    client sees is a server that stopped answering."""
    port, own = str(cluster.port), str(cluster.server.local_port)
    undo = Undo()
    try:
        sh("ip", "rule", "add", "pref", "100", "lookup", "local")
        undo.push("ip", "rule", "del", "pref", "100", "lookup", "local")
        sh("ip", "rule", "del", "pref", "0", "lookup", "local")
        undo.push("ip", "rule", "add", "pref", "0", "lookup", "local")
        sh("ip", "rule", "add", "pref", "5", "ipproto", "tcp", "sport", port, "dport", own, "lookup", "local")
        undo.push("ip", "rule", "del", "pref", "5")
        sh("ip", "rule", "add", "pref", "10", "ipproto", "tcp", "sport", port, "blackhole")
        undo.push("ip", "rule", "del", "pref", "10")
        yield
    finally:
        undo.run()


@contextlib.contextmanager
def fenced(scoutfs_dir: Path, work: Path, run: str, run_args: str, env: Dict[str, str],
           nice: int = 0) -> Iterator[Path]:
    """scoutfs-fenced from scoutfs's sources (utils/fenced), polling every second, running
    ``run run_args`` for each fence request (at ``nice``, as all it starts); yields its log
    file. Ended (its process group) at the end."""
    script = scoutfs_dir / "src" / "utils" / "fenced" / "scoutfs-fenced"
    if not script.is_file():
        raise AssertionError(f"{script} is missing: the scoutfs build has no sources")
    conf, log = work / "scoutfs-fenced.conf", work / "scoutfs-fenced.log"
    conf.write_text(f'SCOUTFS_FENCED_DELAY=1\nSCOUTFS_FENCED_RUN={run}\nSCOUTFS_FENCED_RUN_ARGS="{run_args}"\n')
    with open(log, "wb") as out:
        proc = subprocess.Popen(["nice", "-n", str(nice), "bash", str(script)],
                                env=dict(env, SCOUTFS_FENCED_CONFIG_FILE=str(conf)),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def fence_requests(mount: Mount) -> Dict[str, Dict[str, str]]:
    """The fence requests under ``mount``'s sysfs dir: rid -> {attribute: value}."""
    out: Dict[str, Dict[str, str]] = {}
    try:
        for req in (mount.sysfs / "fence").iterdir():
            attrs = {}
            for name in ("rid", "ipv4_addr", "reason", "fenced", "error"):
                with contextlib.suppress(OSError):
                    attrs[name] = (req / name).read_text().strip()
            out[req.name] = attrs
    except OSError:
        pass
    return out
