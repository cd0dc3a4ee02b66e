"""The real fence scenario of test_fence.py, run once per guest: the recorders, the cut,
scoutfs-fenced with our hook, and what each recorder kept (see test_fence.py)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from scoutfs_collect.system import tracefs
from tests.support.cli import Cli, finish
from tests.support.fence_agent import Agent
from tests.support.helpers import archive_of, extract, unique, wait_for
from tests.support.testhosts import TestHosts
from tests.targets.conftest import RESULTS, SCOUTFS_DIR
from tests.targets.oldscript import OldScriptStop
from tests.targets.scoutfs_cluster import Cluster, cut_client, dmesg, fence_requests, fenced, two_mounts

AGENT = Path(__file__).resolve().parent / "force_unmount_agent.sh"
FENCING = "reconnect timed out, fencing"
KEEPALIVE_MS = 6000  # scoutfs's default is 24000: the fence comes ~30 s after the cut, not ~50
PROBE = "scoutfs_fence_start"
# The fence's chain, from scoutfs-fenced to the victim's answer and the agent, has 30 s
# (scoutfs's FENCE_TIMEOUT_MS) from the fence request, on two emulated CPUs that also run
# what would be other machines in a cluster (the server's recorders): it runs at nice -10,
# the server side's recorders at 10 and 19. Seen without: scoutfs-fenced alone took 6 s to
# start the hook, each Python 8-13 s to start, the request timed out.
FENCE_CHAIN_NICE = -10
RECORD = re.compile(r"^\s*(?P<comm>.+?)-(?P<pid>\d+)\s+\[\d+\]")


@dataclass
class Archive:
    """What one recorder left: its exit, manifest and trace records (comments dropped)."""

    code: int
    stderr: str
    manifest: Dict = field(default_factory=dict)
    trace: List[str] = field(default_factory=list)

    @property
    def ftrace(self) -> Dict:
        return self.manifest["plugins"]["ftrace"]["details"]


@dataclass
class Past:
    """The records of a ring after the fencing line (None: the line is not in the ring)."""

    line: Optional[str]
    after: List[str]

    @property
    def scoutfs(self) -> List[str]:
        return [ln for ln in self.after if re.search(r" scoutfs_\w+:", ln)]

    @property
    def from_fencing_task(self) -> List[str]:
        """Records after the line by the task that logged it (it calls scoutfs_fence_start
        next, then logs scoutfs_net_reconn_free_work_exit)."""
        m = RECORD.match(self.line or "")
        if m is None:
            return []
        return [ln for ln in self.after if (r := RECORD.match(ln)) and r.group("pid") == m.group("pid")]


def past_fencing(trace: List[str]) -> Past:
    hits = [i for i, ln in enumerate(trace) if " console: " in ln and FENCING in ln]
    if not hits:
        return Past(None, [])
    return Past(trace[hits[0]], trace[hits[0] + 1:])


@dataclass
class FenceRun:
    cluster: Cluster
    fencing_lines: List[str]
    not_serviced: List[str]  # scoutfs's "fence request ... was not serviced in 30000ms" lines
    requests: Dict[str, Dict[str, str]]  # as first seen in sysfs
    fenced_log: str
    reclaimed: bool
    enabled_while_armed: List[str]  # top-level enabled_functions lines naming the probe
    enabled_after: List[str]
    top_tracing_on: str
    instances_after: List[str]
    probe: Archive
    user_space: Archive
    old: List[str]
    old_stopped: bool
    victim: Archive
    victim_durable: Optional[float]
    silence: Archive
    agent: Agent
    ssh_stop_s: float  # scoutfs-collect stop over the hook's ssh, no recorder there yet


def slim_profile(cli: Cli, collectors: str, trigger: str) -> Path:
    return cli.profile(f"""\
settings: {{compression: zstd, min_free_mb: 1, phase_timeout: 600}}
collectors:
{collectors}
triggers:
  {trigger}
""")


def ftrace_yaml(instance: str, freeze: bool) -> str:
    no_freeze = "" if freeze else ", freeze_on: [], freeze_functions: []"
    return (f'  dmesg: {{}}\n  ftrace: {{instance: {instance}, events: ["scoutfs:*"], '
            f'buffer_size_kb: 4096{no_freeze}}}')


def collect(proc, tmp: Path, timeout: float) -> Archive:
    code, out, err = finish(proc, timeout=timeout)
    if code != 0:
        return Archive(code, err)
    top = extract(archive_of(out), tmp)
    manifest = json.loads((top / "manifest.json").read_text())
    txt = top / "ftrace" / "trace.txt"
    lines = txt.read_text().splitlines() if txt.is_file() else []
    trace = [ln for ln in lines if ln and not ln.startswith("#")]
    return Archive(code, err, manifest, trace)


def enabled_probe_lines(root: Path) -> List[str]:
    return [ln for ln in (root / "enabled_functions").read_text().splitlines() if ln.startswith(PROBE)]


class Writer:
    """Keeps the server mount busy (scoutfs events to record): a small file every 0.2 s
    (blocked while the cut client holds the lock it needs, as a real node is)."""

    def __init__(self, mnt: Path) -> None:
        self.mnt, self.written, self._end = mnt, 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, name="writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._end.wait(0.2):  # pacing, not waiting for a condition
            try:
                (self.mnt / f"w{self.written}").write_bytes(b"x" * 4096)
            except OSError:
                return
            self.written += 1

    def stop(self) -> None:
        self._end.set()
        self._thread.join(60)


def within(condition, timeout: float, what: str) -> bool:
    """wait_for that answers False instead of failing: a step that did not happen is what a
    later test reports, the scenario goes on to its end."""
    try:
        return bool(wait_for(condition, timeout, what))
    except AssertionError:
        return False


def end(proc: subprocess.Popen, tmp: Path, timeout: float) -> Archive:
    """The recorder's archive once it ended by itself, or after SIGTERM at ``timeout``
    (and SIGKILL ``timeout`` later: then no archive)."""
    if not within(lambda: proc.poll() is not None, timeout, "the recorder ending"):
        step(f"{tmp.name}: SIGTERM after {timeout} s")
        proc.send_signal(signal.SIGTERM)
    try:
        got = collect(proc, tmp, timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        got = Archive(-9, f"did not end within {2 * timeout} s: {err[-2000:]}")
    step(f"{tmp.name}: exit {got.code}")
    keep(f"{tmp.name}.stderr", got.stderr)
    return got


@dataclass
class Recorders:
    """The runs of the scenario, each a Cli of its own (its lock dir) and its process."""

    clis: Dict[str, Cli] = field(default_factory=dict)
    procs: Dict[str, subprocess.Popen] = field(default_factory=dict)

    def cli(self, tmp: Path, name: str) -> Cli:
        (tmp / name).mkdir()
        made = self.clis[name] = Cli(tmp / name)
        return made

    def start(self, name: str, *args: str, nice: int = 0) -> None:
        """Start a run: ``args`` end with IP PORT. The server side's recorders run niced
        (their threads and children inherit it): in a real cluster they run on another
        machine; here their finalize (trace-cmd report, packing) would take the two
        emulated CPUs from the client's side (the fence hook, the victim's answer), which
        has 30 s at most before scoutfs gives up on the fence request."""
        c = self.clis[name]
        proc = self.procs[name] = c.start(*args[:-2], "--events-file", str(c.events), *args[-2:])
        if nice:
            os.setpriority(os.PRIO_PROCESS, proc.pid, nice)

    def wait_armed(self) -> None:
        for name, proc in self.procs.items():
            self.clis[name].wait_event("armed", proc, timeout=600)

    def cleanup(self) -> None:
        for c in self.clis.values():
            c.cleanup()


def start_recorders(r: Recorders, tmp: Path, cluster: Cluster, victim_host) -> None:
    target = [cluster.ip, str(cluster.port)]
    probe = r.cli(tmp, "probe")
    # the ftrace ring at 2 MB a CPU, not the default's 10: the freeze keeps the records up to
    # the fencing line whatever its size, and reporting 10 MB took 100 s of the scenario
    r.start("probe", "--profile", "fence-watch", "--output-dir", str(probe.out),
            "--set", "collectors.tcpdump.heartbeat_timeout=0", "--set", "settings.phase_timeout=600",
            "--set", "collectors.ftrace.buffer_size_kb=2048", *target,
            nice=19)  # frozen in the kernel: its own speed does not change what it kept
    us = r.cli(tmp, "user-space")
    r.start("user-space", "--profile", str(slim_profile(us, ftrace_yaml(unique("sc_fence_us"), freeze=False),
                                                        f"fencing: {{type: kmsg, pattern: '{FENCING}'}}")),
            "--output-dir", str(us.out), *target, nice=10)
    victim = r.cli(tmp, "victim")  # the lock dir the victim's sshd gives `scoutfs-collect stop`
    victim.env.update(SCOUTFS_COLLECT_RUNTIME=str(victim_host.runtime),
                      SCOUTFS_COLLECT_ETC=str(victim_host.dir / "etc"))
    victim_ftrace = ftrace_yaml(unique("sc_fence_victim"), freeze=True) + "\n  scoutfs-counters: {}"
    victim_profile = slim_profile(victim, victim_ftrace, "never: {type: timer, after: 3600}")
    r.start("victim", "--profile", str(victim_profile), "--output-dir", str(victim.out), *target,
            nice=FENCE_CHAIN_NICE)
    silence = r.cli(tmp, "silence")
    silence_profile = slim_profile(silence, "  dmesg: {}", "silence: {type: peer-silence}")
    r.start("silence", "--profile", str(silence_profile), "--output-dir", str(silence.out), *target,
            nice=19)  # ends ~20 s after the cut, then packs while the hook runs
    r.wait_armed()



def keep(name: str, text: str, append: bool = False) -> None:
    """A file of the scenario kept beside the results for a look afterwards."""
    if RESULTS:
        d = Path(RESULTS) / "fence"
        d.mkdir(exist_ok=True)
        with open(d / name, "a" if append else "w") as f:
            f.write(text)


def step(what: str) -> None:
    """One line of the scenario's progress in fence/steps.log (the guest shows nothing else
    while the module fixture runs)."""
    keep("steps.log", f"{time.strftime('%H:%M:%S')} {what}\n", append=True)


@contextlib.contextmanager
def printk_levels(levels: str) -> Iterator[None]:
    proc = Path("/proc/sys/kernel/printk")
    before = " ".join(proc.read_text().split())
    proc.write_text(levels)
    try:
        yield
    finally:
        proc.write_text(before)


def victim_ssh(stack: contextlib.ExitStack, tmp: Path, ip: str, hosts: TestHosts,
               victim) -> Tuple[Path, float]:
    """The ssh_config given to the hook (``-F``: the request's IP, 127.0.0.1, is the victim's
    sshd), with a master connection opened now and reused by the hook's ssh (ControlMaster,
    as a site may set for its leader's ssh to the nodes). In a real cluster the hook's ssh
    connects when it runs; in the emulated guest the connection alone (key exchange,
    sshd's re-exec, PAM) took 11 s of the 30 s scoutfs gives a fence request
    (4.18.0-513.9.1.el8_9, TCG). Also the seconds of ``scoutfs-collect stop`` over it with no
    recorder there yet: what the victim's answer costs besides making the data durable."""
    config = tmp / "ssh_config"
    config.write_text(
        f"Host {ip}\n  Port {victim.port}\n  User root\n  IdentityFile {hosts.key}\n"
        "  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
        f"  LogLevel ERROR\n  ControlMaster auto\n  ControlPath {tmp}/cm-%C\n  ControlPersist yes\n")
    ssh = ["ssh", "-o", "BatchMode=yes", f"-F{config}", ip]
    began = time.monotonic()
    opened = subprocess.run([*ssh, "true"], capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    step(f"ssh master connection: {time.monotonic() - began:.1f} s, exit {opened.returncode} "
         f"{opened.stderr[-300:]}")
    stack.callback(subprocess.run, [*ssh[:-1], "-O", "exit", ip], capture_output=True, timeout=60,
                   stdin=subprocess.DEVNULL)
    began = time.monotonic()
    asked = subprocess.run([*ssh, "scoutfs-collect stop --wait durable --timeout 1"],
                           capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    took = time.monotonic() - began
    step(f"stop over it with no recorder: {took:.1f} s, exit {asked.returncode} {asked.stderr[-300:]}")
    return config, took


def run_fence(stack: contextlib.ExitStack, tmp: Path, root: Path) -> FenceRun:
    """The scenario of the module doc; everything it starts is ended by ``stack`` (last
    started first: the writer and rings before the mounts)."""
    step("mounting")
    stack.callback(step, "torn down")
    cluster = stack.enter_context(two_mounts(Path(SCOUTFS_DIR), tmp, KEEPALIVE_MS))
    stack.callback(step, "unmounting")
    step(f"mounted: {cluster}")
    stack.enter_context(printk_levels("7 4 1 7"))
    hosts = TestHosts(0, in_guest=True)
    stack.callback(hosts.close)
    stack.callback(lambda: keep("victim-sshd.log", (hosts.dir / "victim" / "sshd.log").read_text()))
    victim_host = hosts.add_gateway("victim")  # an sshd on 127.0.0.1: the client's address
    assert victim_host.sshd is not None
    os.setpriority(os.PRIO_PROCESS, victim_host.sshd.pid, FENCE_CHAIN_NICE)  # its sessions too
    ssh_config, ssh_stop_s = victim_ssh(stack, tmp, cluster.ip, hosts, victim_host)
    rec = Recorders()
    stack.callback(rec.cleanup)
    start_recorders(rec, tmp, cluster, victim_host)
    step("recorders armed")
    enabled_while_armed = enabled_probe_lines(root)
    old = OldScriptStop(root, unique("sc_oldscript"), ["scoutfs:*", "printk:console"], FENCING)
    stack.callback(old.close)
    writer = Writer(cluster.server.path)
    stack.callback(writer.stop)
    agent = Agent(tmp / "agent")
    agent.record.mkdir()
    env = dict(os.environ, FENCE_AGENT_RECORD=str(agent.record),
               SCOUTFS_COLLECT_SYSLOG=str(tmp / "no-syslog"))
    run = Path(sys.executable).parent / "scoutfs-collect"  # SCOUTFS_FENCED_RUN
    # The hook's default grace (5 s), as a site runs it. scoutfs-fenced noticing the request,
    # the hook's start, the victim's answer, the agent and `echo 1 > fenced` must fit in
    # scoutfs's 30 s for a fence request, or the server gives up, restarts and fences again
    # (its own mount too: the cut lets only its first connection through). Under emulation
    # the victim's answer alone took 12 to more than 18 s and scoutfs-fenced 4 to 14 s to
    # notice the request: the victim being durable before the agent is not something an
    # emulated guest can show in 30 s (tests/test_fence_hook.py shows it between namespaces).
    hook = f"fence-hook -o -F{ssh_config} -- {AGENT}"
    line = f"scoutfs {cluster.server.fs_id}: client {cluster.ip}:{cluster.client.local_port} {FENCING}"
    reclaimed_line = f"successfully reclaimed resources for fenced rid {cluster.client.rid}"
    with fenced(Path(SCOUTFS_DIR), tmp, str(run), hook, env, nice=FENCE_CHAIN_NICE) as fenced_log, \
            cut_client(cluster):
        step("cut")
        wait_for(lambda: line in dmesg(), 300, "the server's fencing line")
        step("fencing line")
        requests = wait_for(lambda: fence_requests(cluster.server), 60, "a fence request in sysfs")
        step(f"fence request {requests}")
        reclaimed = within(lambda: reclaimed_line in dmesg(), 300, "the server reclaiming the client")
        step(f"reclaimed: {reclaimed}")
        fencing_lines = [ln for ln in dmesg().splitlines() if FENCING in ln]
        not_serviced = [ln for ln in dmesg().splitlines() if "was not serviced in" in ln]
        keep("scoutfs-fenced.log", fenced_log.read_text(errors="replace"))
        # the victim's recorder ends only when the hook's stop reaches it, which may come
        # after the grace (ssh killed) or never: 30 s more at most, then SIGTERM
        got = {name: end(proc, tmp / f"x-{name}", 30 if name == "victim" else 300)
               for name, proc in rec.procs.items()}
        log_text = fenced_log.read_text(errors="replace")
    writer.stop()
    keep("scoutfs-fenced.log", log_text)
    for name, archive in got.items():
        keep(f"{name}-manifest.json", json.dumps(archive.manifest, indent=1))
    keep("dmesg.txt", dmesg())
    for name, c in rec.clis.items():
        keep(f"{name}-events.jsonl", c.events.read_text() if c.events.exists() else "")
    durable = [e["time"] for e in rec.clis["victim"].event_list() if e["event"] == "durable"]
    return FenceRun(
        cluster=cluster, fencing_lines=fencing_lines, not_serviced=not_serviced,
        requests=requests, fenced_log=log_text, reclaimed=reclaimed,
        enabled_while_armed=enabled_while_armed, enabled_after=enabled_probe_lines(root),
        top_tracing_on=(root / "tracing_on").read_text().strip(),
        instances_after=tracefs.list_instances(root),
        probe=got["probe"], user_space=got["user-space"], old=old.trace(), old_stopped=old.stopped,
        victim=got["victim"], victim_durable=durable[0] if durable else None,
        silence=got["silence"], agent=agent, ssh_stop_s=ssh_stop_s)
