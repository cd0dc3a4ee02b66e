"""The cluster tests' driver: test hosts, a small profile with per-host trigger lines
(``freeze-%h-TOKEN``: every host sees every /dev/kmsg line), and the real CLI."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from scoutfs_collect.system import tracefs
from tests.support.helpers import kmsg_write, wait_for
from tests.support.testhosts import TestHosts

PROFILE = """\
description: cluster tests (small and quick)
settings: {output_dir: ., min_free_mb: 10, phase_timeout: 20}
collectors:
  sysinfo: {}
  dmesg: {}
triggers:
  freeze: {type: kmsg, pattern: 'never matches'}
"""
FTRACE = """\
  ftrace: {instance: sfcth_x, events: ["sched:sched_switch"], buffer_size_kb: 128}
"""


class Cluster:
    """Hosts plus the coordinator command line run against them."""

    def __init__(self, hosts: TestHosts, tmp: Path, ftrace: bool = False) -> None:
        self.hosts = hosts
        self.tmp = tmp
        self.events = tmp / "cluster-events.jsonl"
        self.profile = tmp / "cluster.yaml"
        text = PROFILE.replace("triggers:", FTRACE + "triggers:") if ftrace else PROFILE
        self.profile.write_text(text)
        self.ftrace = ftrace
        self.procs: List[subprocess.Popen] = []
        self.env = dict(os.environ)

    def argv(self, *extra: str, nodeset: Optional[str] = None) -> List[str]:
        sets = ["--set", f"triggers.freeze.pattern=freeze-%h-{self.hosts.token}"]
        if self.ftrace:
            sets += ["--set", f"collectors.ftrace.instance={self.instance('%h')}"]
        return [sys.executable, "-m", "scoutfs_collect", "cluster", *extra,
                "-w", nodeset or self.hosts.nodeset, "-o", self.hosts.ssh_options,
                "--profile", str(self.profile), *sets,
                "--output-dir", str(self.hosts.dir / "out" / "%h"),
                "--events-file", str(self.events), "127.0.0.1", "7000"]

    def instance(self, node: str) -> str:
        return f"sfcth_{self.hosts.token}_{node}"

    def gather_argv(self) -> List[str]:
        return [sys.executable, "-m", "scoutfs_collect", "cluster", "gather", "-w",
                self.hosts.nodeset, "-o", self.hosts.ssh_options, "--events-file", str(self.events)]

    def run(self, argv: List[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=self.tmp, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=self.env)

    def start(self, *extra: str, nodeset: Optional[str] = None) -> subprocess.Popen:
        """The coordinator in the background, in its own process group (like a login)."""
        p = subprocess.Popen(self.argv(*extra, nodeset=nodeset), cwd=self.tmp, text=True, env=self.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(p)
        return p

    def event_list(self) -> List[Dict]:
        if not self.events.exists():
            return []
        return [json.loads(line) for line in self.events.read_text().splitlines() if line.strip()]

    def wait_event(self, name: str, proc: Optional[subprocess.Popen] = None, timeout: float = 60,
                   **fields) -> Dict:
        def found():
            for e in self.event_list():
                if e["event"] == name and all(e.get(k) == v for k, v in fields.items()):
                    return e
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"coordinator exited {proc.returncode} before {name}: "
                                     f"{proc.stderr.read() if proc.stderr else ''}")
            return None
        return wait_for(found, timeout, f"cluster event {name} {fields}")

    def use_gateway(self) -> None:
        """Tree mode: a gateway host in front of every host, named in a topology.conf
        that ClusterShell finds through CLUSTERSHELL_CFGDIR."""
        self.gateway = self.hosts.add_gateway("gw")
        cfg = self.tmp / "clustershell"
        cfg.mkdir()
        root = socket.gethostname().split(".")[0]
        (cfg / "topology.conf").write_text(f"[routes]\n{root}: gw\ngw: {self.hosts.nodeset}\n")
        self.env["CLUSTERSHELL_CFGDIR"] = str(cfg)
        # The gateway runs 'python -m ClusterShell.Gateway': this venv's python has it.
        self.env["CLUSTERSHELL_GW_PYTHON_EXECUTABLE"] = sys.executable

    def fire(self, node: str) -> None:
        """The kernel line only ``node``'s trigger matches."""
        kmsg_write(f"freeze-{node}-{self.hosts.token}")

    def finish(self, proc: subprocess.Popen, timeout: float = 120):
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def bundle_path(stdout: str) -> Path:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("bundle: "), stdout
    return Path(last[len("bundle: "):])


def cluster_json(bundle: Path) -> Dict:
    with tarfile.open(bundle) as tar:
        first = tar.next()
        assert first is not None and first.name.endswith("/cluster.json")
        f = tar.extractfile(first)
        assert f is not None
        return json.loads(f.read())


def members(bundle: Path) -> Dict[str, int]:
    with tarfile.open(bundle) as tar:
        return {m.name.split("/", 1)[1]: m.size for m in tar.getmembers()}


@dataclasses.dataclass
class TriggeredRun:
    """A finished cluster run in which one host's kmsg trigger stopped every host."""

    cluster: Cluster
    origin: str
    status: int
    out: str
    err: str
    instances_left: Dict[str, bool]  # host -> its tracefs instance still there after the run

    @property
    def bundle(self) -> Path:
        return bundle_path(self.out)


@contextlib.contextmanager
def triggered_run(tmp: Path, count: int = 3, origin: str = "th2") -> Iterator[TriggeredRun]:
    """Run ``count`` test hosts with ftrace, fire ``origin``'s trigger line, wait for the
    bundle; the hosts are removed as soon as the coordinator has finished (the bundle, in
    ``tmp``, is all the caller reads)."""
    hosts = TestHosts(count)
    c = Cluster(hosts, tmp, ftrace=True)
    try:
        proc = c.start()
        c.wait_event("armed", proc)
        c.fire(origin)
        status, out, err = c.finish(proc)
        left = {name: tracefs.TraceInstance(c.instance(name)).exists() for name in hosts.names}
    finally:
        c.kill_all()
        hosts.close()
    yield TriggeredRun(c, origin, status, out, err, left)
