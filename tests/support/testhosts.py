"""Test hosts on this machine: each a network namespace with its own sshd and hostname.

A host is what a cluster test needs from a storage node: an address reached over a veth
pair from the root namespace, an sshd (Debian ``openssh-server``, never the system one:
its own config, host key, pid file and authorized key), its own hostname (``unshare
--uts``) and, since all hosts share one kernel, its own scoutfs-collect lock and config
dirs (``SCOUTFS_COLLECT_RUNTIME``/``SCOUTFS_COLLECT_ETC`` set by sshd's ``SetEnv``) and
output dir. sshd puts the test's venv first on ``PATH`` so ``scoutfs-collect`` on a host
is the one under test. A generated ``ssh_config`` (``ssh -F``) maps host names to their
addresses, with host key checking off and ``BatchMode yes``.

Addresses: 10.231.N.0/24, one /30 per host (root side .4i+1, host .4i+2), N chosen so
no other interface on this machine uses it. Traffic only ever goes between the root
namespace and these namespaces.

Names carry the owning process id (``sfc-th-PID-I`` for namespaces, ``sfthPIDhI`` for
root-side veths) so a later run removes the leftovers of a killed run (its pid is gone)
and never touches a concurrent one. Teardown runs on every exit path: the fixture's
finalizer, ``atexit`` and SIGTERM (tests/support/netns.py).

Usage::

    def test_x(testhosts):
        hosts = testhosts(3)          # th1, th2, th3, sshd running
        hosts.ssh_options             # '-F /tmp/.../ssh_config', for ClusterShell's -o
        hosts.nodeset                 # 'th[1-3]'
        hosts["th2"].kill()           # power it off: every process in it SIGKILLed
        hosts.power_on("th2")         # boot it again: sshd back, /run (its runtime dir) empty
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from tests.support import netns

PREFIX = "sfc-th-"
VETH_PREFIX = "sfth"
SUBNET = "10.231"
SSHD = "/usr/sbin/sshd"
GATEWAY_PIDS = Path("/tmp/sfc-th-gateways")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def namespaces() -> List[str]:
    """Names of the network namespaces made by this helper (any run)."""
    return netns.namespaces(PREFIX)


def _remove_stale_gateways() -> None:
    if not GATEWAY_PIDS.is_dir():
        return
    for entry in GATEWAY_PIDS.iterdir():
        owner, _, pid = entry.name.partition("-")
        if not (owner.isdigit() and pid.isdigit()) or netns.alive(int(owner)):
            continue
        try:  # only if that pid is still the sshd started with that config
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if entry.read_text() in cmdline:
                os.kill(int(pid), signal.SIGTERM)
        except OSError:
            pass
        entry.unlink(missing_ok=True)


_TAGS = itertools.cycle("abcdefghijklmnopqrstuvwxyz")


def _next_tag() -> str:
    return next(_TAGS)


def remove_leftovers() -> List[str]:
    """Remove the namespaces (and gateway sshds) of earlier runs whose owner is gone."""
    _remove_stale_gateways()
    return netns.remove_leftovers(PREFIX)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _end_gateway(host: Host) -> None:
    """End a gateway's sshd and every session under it (they are not in a namespace)."""
    if host.sshd is None:
        return
    try:
        import psutil

        procs = psutil.Process(host.sshd.pid).children(recursive=True)
    except Exception:
        procs = []
    for p in [host.sshd] + procs:
        try:
            p.terminate()
        except Exception:
            pass
    try:
        host.sshd.wait(timeout=10)
    except subprocess.TimeoutExpired:
        host.sshd.kill()
        host.sshd.wait()
    (GATEWAY_PIDS / f"{os.getpid()}-{host.sshd.pid}").unlink(missing_ok=True)


def _free_subnet() -> int:
    used = _ip("-4", "-o", "addr", "show").stdout
    start = os.getpid() % 200 + 20
    for n in list(range(start, 250)) + list(range(20, start)):
        if f" {SUBNET}.{n}." not in used:
            return n
    raise RuntimeError(f"no free {SUBNET}.N.0/24 for test hosts")


@dataclasses.dataclass
class Host:
    """One test host: its name (also its hostname), namespace, address and dirs."""

    name: str
    ns: str
    address: str
    dir: Path
    sshd: Optional[subprocess.Popen] = None
    port: int = 22  # its sshd's

    @property
    def runtime(self) -> Path:
        """Its SCOUTFS_COLLECT_RUNTIME (the host lock lives there)."""
        return self.dir / "run"

    @property
    def bin(self) -> Path:
        """First on the host's PATH (empty): a test may put a stand-in command there."""
        return self.dir / "bin"

    @property
    def output(self) -> Path:
        """A per-host output dir tests may pass as --output-dir (``out/%h``)."""
        return self.dir.parent / "out" / self.name

    def pids(self) -> List[int]:
        """Every process running in the host (its sshd, sessions and their children)."""
        return netns.pids(self.ns)

    def kill(self) -> None:
        """Power the host off: SIGKILL every process in it; the namespace stays (no route
        change), so ssh sees its connection reset as after a crash."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class TestHosts:
    """A set of hosts made for one test; ``close()`` removes every one of them."""

    __test__ = False  # not a pytest test class

    def __init__(self, count: int, venv_bin: Optional[Path] = None, base: Optional[Path] = None,
                 in_guest: bool = False) -> None:
        """``in_guest``: sshds for a virtme-ng guest of the target tier: UsePAM yes (sshd
        without PAM refuses every login to a locked account, and root's is locked there:
        /etc/shadow ``root:!``) and HOME the host's dir (bash run by sshd sources
        ~/.bashrc, and the build machine's root .bashrc, seen by the guest, spends ~10 s
        of emulated CPU in pyenv's set-up before every command)."""
        self.in_guest = in_guest
        remove_leftovers()
        self.token = uuid.uuid4().hex[:6]
        self.dir = Path(tempfile.mkdtemp(prefix="sfc-th.", dir=base))
        os.chmod(self.dir, 0o755)
        self.venv_bin = venv_bin or Path(sys.executable).parent
        self.hosts: Dict[str, Host] = {}
        self.gateways: Dict[str, Host] = {}
        self._closed = False
        netns.set_up(lambda: self._make(count), self.close)

    # -- set-up -----------------------------------------------------------------------

    def _make(self, count: int) -> None:
        self.key = self.dir / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sfc-th",
                        "-f", str(self.key)], check=True)
        if not Path("/run/sshd").is_dir():  # Debian's sshd privilege-separation dir
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        subnet = _free_subnet()
        pid = os.getpid()
        # A new tag for each TestHosts of this process: the root-side veth of a deleted
        # namespace lingers for a few seconds, so names must not repeat back to back.
        tag = _next_tag()
        for i in range(1, count + 1):
            name = f"th{i}"
            ns = f"{PREFIX}{pid}-{tag}{i}"
            veth = f"{VETH_PREFIX}{pid}{tag}h{i}"  # at most 15 characters (IFNAMSIZ)
            root_addr, host_addr = f"{SUBNET}.{subnet}.{4 * i + 1}", f"{SUBNET}.{subnet}.{4 * i + 2}"
            host = Host(name=name, ns=ns, address=host_addr, dir=self.dir / name)
            self.hosts[name] = host
            _ip("netns", "add", ns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("addr", "add", f"{root_addr}/30", "dev", veth)
            _ip("link", "set", veth, "up")
            _ip("-n", ns, "addr", "add", f"{host_addr}/30", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            self._start_sshd(host)
        self.ssh_config = self.dir / "ssh_config"
        self.ssh_config.write_text("".join(
            f"Host {h.name}\n  HostName {h.address}\n  User root\n  IdentityFile {self.key}\n"
            "  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
            "  BatchMode yes\n  LogLevel ERROR\n  ConnectTimeout 5\n\n"
            for h in self.hosts.values()))
        for host in self.hosts.values():
            self._wait_sshd(host)

    def _start_sshd(self, host: Host, netns: bool = True, port: int = 22) -> None:
        host.dir.mkdir(mode=0o755)
        for sub in ("run", "etc", "bin"):
            (host.dir / sub).mkdir(mode=0o755)
        host.output.mkdir(parents=True, mode=0o755, exist_ok=True)
        hostkey = host.dir / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)], check=True)
        (host.dir / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        path = f"{host.bin}:{self.venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        config = host.dir / "sshd_config"
        config.write_text(
            self._guest_config(host, path) +
            f"ListenAddress {host.address}\nPort {port}\nHostKey {hostkey}\n"
            f"PidFile {host.dir / 'sshd.pid'}\nAuthorizedKeysFile {host.dir / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPrintMotd no\n"
            "MaxStartups 100:30:200\nMaxSessions 100\n"
            f"SetEnv SCOUTFS_COLLECT_RUNTIME={host.runtime} SCOUTFS_COLLECT_ETC={host.dir / 'etc'} "
            f"PATH={path}\n"
            "Subsystem sftp internal-sftp\nLogLevel ERROR\n")
        self._launch_sshd(host, netns)

    @staticmethod
    def _launch_sshd(host: Host, netns: bool = True) -> None:
        log = open(host.dir / "sshd.log", "ab")
        # nsenter, not 'ip netns exec': that remounts /sys, which would hide tracefs.
        enter = ["nsenter", f"--net=/run/netns/{host.ns}"] if netns else []
        host.sshd = subprocess.Popen(
            [*enter, "unshare", "--uts", "sh", "-c",
             f"hostname {host.name} && exec {SSHD} -D -e -f {host.dir / 'sshd_config'}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()

    def _guest_config(self, host: Host, path: str) -> str:
        """For an ``in_guest`` sshd, lines put before the others (sshd keeps the first
        UsePAM and the first SetEnv it reads): UsePAM yes, and the SetEnv with HOME (and
        PYTHONPYCACHEPREFIX when set, so the guest's Pythons share one bytecode cache)."""
        if not self.in_guest:
            return ""
        prefix = os.environ.get("PYTHONPYCACHEPREFIX")
        return ("UsePAM yes\n"
                f"SetEnv SCOUTFS_COLLECT_RUNTIME={host.runtime} SCOUTFS_COLLECT_ETC={host.dir / 'etc'} "
                f"PATH={path} HOME={host.dir}{f' PYTHONPYCACHEPREFIX={prefix}' if prefix else ''}\n")

    def _wait_sshd(self, host: Host, timeout: float = 20.0, port: int = 22) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if host.sshd is not None and host.sshd.poll() is not None:
                raise RuntimeError(f"{host.name}: sshd exited: {(host.dir / 'sshd.log').read_text()}")
            try:
                with socket.create_connection((host.address, port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{host.name}: sshd not listening on {host.address}:{port}") from None
                time.sleep(0.02)  # polling for the listener, not a delay

    def add_gateway(self, name: str = "gw") -> Host:
        """A ClusterShell gateway host in front of the others: an sshd of its own in the
        root namespace on 127.0.0.1 (only from there are all hosts routable without
        turning on IP forwarding, a system-wide setting), hostname ``name``. Its pid file
        is kept under GATEWAY_PIDS so a later run ends it if this one is killed."""
        port = _free_port()
        host = Host(name=name, ns="", address="127.0.0.1", dir=self.dir / name, port=port)
        self._start_sshd(host, netns=False, port=port)
        GATEWAY_PIDS.mkdir(mode=0o700, exist_ok=True)
        assert host.sshd is not None
        (GATEWAY_PIDS / f"{os.getpid()}-{host.sshd.pid}").write_text(str(host.dir / "sshd_config"))
        self.gateways[name] = host
        with open(self.ssh_config, "a") as f:
            f.write(f"Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
                    f"  IdentityFile {self.key}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
                    "  UserKnownHostsFile /dev/null\n  BatchMode yes\n  LogLevel ERROR\n\n")
        self._wait_sshd(host, port=port)
        return host

    # -- use --------------------------------------------------------------------------

    def power_on(self, name: str) -> None:
        """Boot a host again after :meth:`Host.kill`: its sshd starts, and its runtime dir
        is emptied as a boot empties /run (the host lock's record of the last run is gone)."""
        host = self.hosts[name]
        assert not host.pids(), f"{name} is still running"
        if host.sshd is not None:
            host.sshd.wait()
        for entry in host.runtime.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        self._launch_sshd(host)
        self._wait_sshd(host)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts.values())

    @property
    def names(self) -> List[str]:
        return list(self.hosts)

    @property
    def nodeset(self) -> str:
        """All hosts as a ClusterShell node set, e.g. ``th[1-3]``."""
        return f"th[1-{len(self.hosts)}]" if len(self.hosts) > 1 else self.names[0]

    @property
    def ssh_options(self) -> str:
        """ssh options that reach the hosts (ClusterShell's ``-o``)."""
        return f"-F {self.ssh_config}"

    def ssh(self, name: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run one command on a host with a fresh ssh connection."""
        return subprocess.run(["ssh", "-F", str(self.ssh_config), name, command],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    # -- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        """End every process in every host, delete the namespaces and the files."""
        if self._closed:
            return
        self._closed = True
        for host in self.gateways.values():
            _end_gateway(host)
        for host in self.hosts.values():
            netns.remove(host.ns)
            if host.sshd is not None:
                try:
                    host.sshd.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    host.sshd.kill()
                    host.sshd.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        netns.untrack(self.close)


@pytest.fixture
def testhosts(tmp_path: Path):
    """``testhosts(n)`` makes n hosts (th1..thN); all are removed when the test ends."""
    made: List[TestHosts] = []

    def make(count: int) -> TestHosts:
        hosts = TestHosts(count)
        made.append(hosts)
        return hosts

    yield make
    for hosts in made:
        hosts.close()
