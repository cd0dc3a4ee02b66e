"""The fence hook end to end: scoutfs-fenced's call (environment, arguments) on the
"leader" (the root namespace), a victim test host with its own sshd and a running
recorder, the stand-in agent (tests/support/fence_agent.sh: a real agent powers machines
off). What a user checks: the victim's archive says fence-hook and holds the ftrace raw
pages, the agent ran after the victim was durable, with the same environment and
arguments, its exit status comes back, and a victim that cannot answer never delays
the agent past the grace."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from scoutfs_collect.demo import fixture
from tests.support.cli import finish
from tests.support.helpers import archive_of, inspect, unique, wait_for
from tests.support.testhosts import Host, TestHosts

pytestmark = pytest.mark.usefixtures("tracefs_untouched")
AGENT = Path(__file__).resolve().parent / "support" / "fence_agent.sh"
RID = "00000000000000ab"
GRACE = 5.0  # the default; ssh plus the victim shell take ~1 s here
ROOMY = 20.0  # where the test is not about the grace: room for a loaded machine


class Victim:
    """A recorder running on a test host (in its network namespace, with its lock dir)."""

    def __init__(self, host: Host, tmp: Path) -> None:
        self.host = host
        self.instance = unique("sc_victim")
        self.events = tmp / f"{host.name}-events.jsonl"
        profile = tmp / f"{host.name}.yaml"
        profile.write_text(f"""\
settings: {{compression: gz, min_free_mb: 1}}
collectors:
  dmesg: {{}}
  ftrace: {{instance: {self.instance}, events: ["sched:sched_switch"], buffer_size_kb: 512, freeze_on: []}}
triggers:
  never: {{type: timer, after: 3600}}
""")
        env = dict(os.environ, SCOUTFS_COLLECT_RUNTIME=str(host.runtime),
                   SCOUTFS_COLLECT_ETC=str(host.dir / "etc"))
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{host.ns}", sys.executable, "-m", "scoutfs_collect",
             "--profile", str(profile), "--output-dir", str(host.output), "--events-file",
             str(self.events), "127.0.0.1", "7001"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=tmp)  # not the checkout: -m would import the source tree first
        wait_for(lambda: self.event("armed") or self._exited(), 60, "the victim's recorder armed")

    def _exited(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"victim recorder exited {self.proc.returncode}: {self.proc.stderr.read()}")

    def event(self, name: str) -> Optional[Dict]:
        if not self.events.exists():
            return None
        lines = [json.loads(ln) for ln in self.events.read_text().splitlines() if ln.strip()]
        return next((e for e in lines if e["event"] == name), None)

    def end(self) -> None:
        """SIGCONT and SIGTERM it if it still runs; it packs its archive and exits."""
        if self.proc.returncode is not None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=60)


class Agent:
    """What the stand-in agent recorded."""

    def __init__(self, record: Path) -> None:
        self.record = record

    @property
    def ran(self) -> bool:
        return (self.record / "started").exists()

    @property
    def started(self) -> float:
        return float((self.record / "started").read_text())

    @property
    def argv(self) -> List[str]:
        return (self.record / "argv").read_text().splitlines()

    @property
    def env(self) -> Dict[str, str]:
        lines = (self.record / "env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)


@pytest.fixture(scope="module")
def hosts():
    """One victim host for the whole module (made once: a host costs ~1 s; each test
    leaves it as it found it: no recorder, no route change)."""
    made = TestHosts(1)
    yield made
    made.close()


@pytest.fixture
def syslog(tmp_path):
    """A datagram socket standing in for /dev/log (the real one is the host's syslog)."""
    path = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    yield path, sock
    sock.close()


def ssh_options(hosts: TestHosts, key: Optional[Path] = None) -> str:
    return (f"-i {key or hosts.key} -l root -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")


def run_hook(tmp: Path, ip: str, options: str, agent_args: List[str], syslog_path: Optional[Path] = None,
             sysfs: Optional[Path] = None, grace: float = GRACE):
    """Run the hook as scoutfs-fenced would; (launch time, completed process, Agent)."""
    record = tmp / unique("agent")
    record.mkdir()
    env = dict(os.environ, SCOUTFS_FENCED_REQ_RID=RID, SCOUTFS_FENCED_REQ_IP=ip,
               FENCE_AGENT_RECORD=str(record),
               SCOUTFS_COLLECT_SYSLOG=str(syslog_path or tmp / "no-syslog"))
    argv = [sys.executable, "-m", "scoutfs_collect", "fence-hook", "--grace", str(grace), "-o", options,
            "--remote-command", "scoutfs-collect"]
    if sysfs is not None:
        argv += ["--sysfs-root", str(sysfs)]
    launched = time.time()
    result = subprocess.run(argv + ["--", str(AGENT), *agent_args], env=env, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=tmp)
    return launched, result, Agent(record)


def test_victim_is_durable_before_the_agent_runs(hosts, tmp_path, syslog, cli):
    victim = Victim(hosts["th1"], tmp_path)
    # the leader's own recorder, ending on its scoutfs-fence trigger as without the hook
    sysfs = tmp_path / "sysfs"
    (mount,) = fixture.build(sysfs, mounts=1)
    leader = cli.start("--profile", str(cli.profile(f"""\
settings: {{compression: gz, min_free_mb: 1}}
collectors: {{dmesg: {{}}}}
triggers: {{fence-request: {{type: scoutfs-fence, sysfs_root: {sysfs}, interval: 0.1}}}}
""")), "--output-dir", str(cli.out), "--events-file", str(cli.events), "127.0.0.1", "7001")
    cli.wait_event("armed", leader)
    fixture.add_fence_request(mount, RID, victim.host.address, reason="client_recovery")
    try:
        _, result, agent = run_hook(tmp_path, victim.host.address, ssh_options(hosts),
                                    ["exit", "0", "--ipmi-host", "bmc-th1"], syslog[0], sysfs, ROOMY)
        assert result.returncode == 0, result.stderr
        code, out, err = finish(victim.proc)
    finally:
        victim.end()
    assert code == 0, err
    # the agent: after the victim was durable, same arguments and environment
    durable = victim.event("durable")
    assert durable is not None and agent.started >= durable["time"]
    assert agent.argv == ["exit", "0", "--ipmi-host", "bmc-th1"]
    assert agent.env["SCOUTFS_FENCED_REQ_RID"] == RID
    assert agent.env["SCOUTFS_FENCED_REQ_IP"] == victim.host.address
    # the victim's archive
    m = inspect(cli, archive_of(out))
    assert m["trigger"]["type"] == "fence-hook"
    reason = m["trigger"]["reason"]
    assert f"leader {socket.gethostname()}" in reason and RID in reason and "client_recovery" in reason
    ftrace = m["plugins"]["ftrace"]
    assert ftrace["details"]["raw_bytes"] > 0 and "raw_durable_s" in ftrace["details"]
    raw = [f for f in ftrace["files"] if f["path"].startswith("raw/cpu")]
    assert raw and sum(f["size"] for f in raw) == ftrace["details"]["raw_bytes"] > 0
    # one log line, on stderr and to syslog
    lines = [ln for ln in result.stderr.splitlines() if "fence-hook" in ln]
    assert len(lines) == 1 and "victim durable after" in lines[0], result.stderr
    assert "victim durable after" in syslog[1].recv(65536).decode()
    # the leader's recorder ended on the fence request itself
    code, out, err = finish(leader)
    assert code == 0, err
    assert inspect(cli, archive_of(out))["trigger"]["type"] == "scoutfs-fence"


@pytest.mark.parametrize("agent_args, status", [(["exit", "0"], 0), (["exit", "3"], 3),
                                                (["signal", "TERM"], 128 + signal.SIGTERM)],
                         ids=["exit-0", "exit-3", "sigterm"])
def test_agent_exit_status_is_passed_through(hosts, tmp_path, agent_args, status):
    # no recorder there: the hook goes straight on
    _, result, agent = run_hook(tmp_path, hosts["th1"].address, ssh_options(hosts), agent_args,
                                grace=ROOMY)
    assert agent.ran
    assert result.returncode == status, result.stderr
    assert "victim no-recorder" in result.stderr


def _unreachable(hosts: TestHosts, tmp: Path):
    host = hosts["th1"]
    root_side = host.address.rsplit(".", 1)[0] + "." + str(int(host.address.rsplit(".", 1)[1]) - 1)
    # its answers go nowhere: ssh hangs in connect, as with a dead network
    route = ["route", "add", "blackhole", f"{root_side}/32"]
    subprocess.run(["ip", "-n", host.ns, *route], check=True)
    return ssh_options(hosts), lambda: subprocess.run(["ip", "-n", host.ns, "route", "del", *route[2:]],
                                                      check=True)


def _stopped_recorder(hosts: TestHosts, tmp: Path):
    victim = Victim(hosts["th1"], tmp)
    os.kill(victim.proc.pid, signal.SIGSTOP)
    return ssh_options(hosts), victim.end


def _wrong_key(hosts: TestHosts, tmp: Path):
    key = tmp / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return ssh_options(hosts, key), None


def _no_recorder(hosts: TestHosts, tmp: Path):
    return ssh_options(hosts), None


# ssh's own ConnectTimeout (the whole seconds of the grace left) or the hook's deadline:
# whichever comes first ends an unanswered connection
SILENT = ("unreachable", "no-answer")


@pytest.mark.parametrize("make, outcomes", [(_unreachable, SILENT), (_no_recorder, ("no-recorder",)),
                                            (_stopped_recorder, ("no-answer",)),
                                            (_wrong_key, ("unreachable",))],
                         ids=["unreachable", "no-recorder", "sigstopped-recorder", "key-refused"])
def test_agent_runs_within_the_grace(hosts, tmp_path, make, outcomes):
    options, undo = make(hosts, tmp_path)
    try:
        launched, result, agent = run_hook(tmp_path, hosts["th1"].address, options, ["exit", "0"])
    finally:
        if undo is not None:
            undo()
    assert result.returncode == 0, result.stderr
    assert agent.started - launched <= GRACE + 0.5
    (line,) = [ln for ln in result.stderr.splitlines() if "fence-hook" in ln]
    assert any(f"victim {outcome} after" in line for outcome in outcomes), line


def test_bad_hook_arguments_are_one_line_errors(tmp_path):
    for argv in (["fence-hook"], ["fence-hook", "--grace", "x", "--", "true"], ["fence-hook", "--"]):
        result = subprocess.run([sys.executable, "-m", "scoutfs_collect", *argv], capture_output=True,
                                text=True, timeout=30, cwd=tmp_path)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:")
