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
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

from scoutfs_collect.demo import fixture
from tests.support.cli import finish
from tests.support.fence_agent import Agent
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
             sysfs: Optional[Path] = None, grace: float = GRACE, extra: Sequence[str] = (),
             env: Optional[Dict[str, str]] = None):
    """Run the hook as scoutfs-fenced would (``extra``: more hook options, last before
    ``--``; ``env``: more environment); (launch time, completed process, Agent)."""
    record = tmp / unique("agent")
    record.mkdir()
    env = dict(os.environ, SCOUTFS_FENCED_REQ_RID=RID, SCOUTFS_FENCED_REQ_IP=ip,
               FENCE_AGENT_RECORD=str(record),
               SCOUTFS_COLLECT_SYSLOG=str(syslog_path or tmp / "no-syslog"), **(env or {}))
    argv = [sys.executable, "-m", "scoutfs_collect", "fence-hook", "--grace", str(grace), "-o", options,
            "--remote-command", "scoutfs-collect"]
    if sysfs is not None:
        argv += ["--sysfs-root", str(sysfs)]
    launched = time.time()
    result = subprocess.run(argv + [*extra, "--", str(AGENT), *agent_args], env=env, capture_output=True,
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


STATUSES = pytest.mark.parametrize("agent_args, status", [(["exit", "0"], 0), (["exit", "3"], 3),
                                                         (["signal", "TERM"], 128 + signal.SIGTERM)],
                                   ids=["exit-0", "exit-3", "sigterm"])
SAME_ENV = {"FENCE_TEST_MARK": "the same  environment, blanks kept"}
# what the log line says when the victim was asked (an answer, or none within the grace)
ASKED = re.compile(r"victim (no-recorder|no-answer) after")


def passed_through(result: subprocess.CompletedProcess, agent: Agent, agent_args: List[str],
                   status: int, ip: str) -> str:
    """The agent ran with the hook's arguments and environment, its status is the hook's,
    and the hook said so in one line (stderr is that line alone); that line."""
    assert agent.ran, result.stderr
    assert result.returncode == status, result.stderr
    assert agent.argv == agent_args
    assert agent.env["SCOUTFS_FENCED_REQ_RID"] == RID and agent.env["SCOUTFS_FENCED_REQ_IP"] == ip
    assert agent.env["FENCE_TEST_MARK"] == SAME_ENV["FENCE_TEST_MARK"]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("scoutfs-collect fence-hook: "), result.stderr
    return lines[0]


# each kind of bad option (as given last before --) and what the log line calls it
BAD_OPTIONS = {"bad-grace": (["--grace", "x"], "--grace 'x': seconds"),
               "unknown-option": (["--ssh-key=/root/.ssh/fence"], "--ssh-key: unknown option"),
               "o-unsplittable": (["-o", "'-i"], "-o \"'-i\": No closing quotation"),
               "grace-missing-value": (["--grace"], "--grace: missing its value")}


@pytest.mark.parametrize("kind", BAD_OPTIONS)
@STATUSES
def test_bad_options_still_run_the_agent(hosts, tmp_path, kind, agent_args, status):
    # one typo in scoutfs-fenced.conf must not fail every fence of the cluster
    extra, named = BAD_OPTIONS[kind]
    ip = hosts["th1"].address
    _, result, agent = run_hook(tmp_path, ip, ssh_options(hosts), [*agent_args, "--ipmi-host", "bmc-th1"],
                                grace=ROOMY, extra=extra, env=SAME_ENV)
    line = passed_through(result, agent, [*agent_args, "--ipmi-host", "bmc-th1"], status, ip)
    assert named in line and "asking the victim with the defaults" in line, line
    assert ASKED.search(line), line  # with the options that were good


@pytest.mark.parametrize("make", ["fifo", "directory"])
@STATUSES
def test_unreadable_request_reason_still_runs_the_agent(hosts, tmp_path, make, agent_args, status):
    ip = hosts["th1"].address
    sysfs = tmp_path / "sysfs"
    (mount,) = fixture.build(sysfs, mounts=1)
    reason = fixture.add_fence_request(mount, RID, ip, reason="client_recovery") / "reason"
    reason.unlink()
    if make == "fifo":
        os.mkfifo(reason)  # opening it for reading would wait for a writer forever
    else:
        reason.mkdir()
    _, result, agent = run_hook(tmp_path, ip, ssh_options(hosts), agent_args, sysfs=sysfs, grace=ROOMY,
                                env=SAME_ENV)
    line = passed_through(result, agent, agent_args, status, ip)
    assert "(reason ?, reason unreadable:" in line and "not a regular file" in line, line
    assert ASKED.search(line), line  # the victim is asked without the reason


@pytest.mark.parametrize("broken, asked", [("fence/victim.py", False), ("ui/console.py", True)],
                         ids=["hook-module", "cli-module"])
def test_a_module_that_fails_to_import_does_not_fail_the_fence(hosts, tmp_path, broken, asked):
    # a broken install: the package the hook runs from copied, one module raising on
    # import, the copy first on the path
    where = "import scoutfs_collect; print(scoutfs_collect.__file__)"
    installed = subprocess.run([sys.executable, "-c", where], capture_output=True, text=True, check=True,
                               cwd=tmp_path).stdout.strip()
    site = tmp_path / "site"
    shutil.copytree(Path(installed).parent, site / "scoutfs_collect",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(site / "scoutfs_collect" / broken, "a") as f:
        f.write('\nraise ImportError("broken install")\n')
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    ip = hosts["th1"].address
    _, result, agent = run_hook(tmp_path, ip, ssh_options(hosts), ["exit", "3"], grace=ROOMY,
                                env={**SAME_ENV, "PYTHONPATH": path})
    line = passed_through(result, agent, ["exit", "3"], 3, ip)
    if asked:  # the CLI's modules are not on the hook's path
        assert ASKED.search(line), line
    else:
        assert "the hook cannot load (ImportError: broken install); victim not asked" in line, line


def _processes_with(marker: str) -> List[int]:
    """Processes whose command line holds ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(pid))
    return found


def test_sigterm_before_the_agent_leaves_no_ssh_behind(tmp_path):
    # a victim that accepts the connection and never says a word: ssh waits
    rid = uuid.uuid4().hex[:16]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    record = tmp_path / "agent"
    record.mkdir()
    env = dict(os.environ, SCOUTFS_FENCED_REQ_RID=rid, SCOUTFS_FENCED_REQ_IP="127.0.0.1",
               FENCE_AGENT_RECORD=str(record), SCOUTFS_COLLECT_SYSLOG=str(tmp_path / "no-syslog"))
    options = (f"-p {silent.getsockname()[1]} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
               "-o LogLevel=ERROR")
    hook = subprocess.Popen([sys.executable, "-m", "scoutfs_collect", "fence-hook", "--grace", str(ROOMY),
                             "-o", options, "--", str(AGENT), "exit", "0"], env=env, cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    conn: Optional[socket.socket] = None
    try:
        silent.settimeout(ROOMY)
        conn, _ = silent.accept()  # ssh connected and waits for the victim's banner (never sent)
        ssh = wait_for(lambda: [p for p in _processes_with(rid) if p != hook.pid], ROOMY, "the hook's ssh")
        hook.send_signal(signal.SIGTERM)
        _, err = hook.communicate(timeout=ROOMY)
        assert [p for p in _processes_with(rid) if p in ssh] == [], "the hook's ssh was left behind"
        # 143 to scoutfs-fenced's shell; the signal stops the fence, as it would the agent
        assert hook.returncode in (128 + signal.SIGTERM, -signal.SIGTERM), err
        assert not Agent(record).ran
        (line,) = err.splitlines()
        assert "SIGTERM" in line and "agent not run" in line, line
    finally:
        for pid in _processes_with(rid):
            os.kill(pid, signal.SIGKILL)
        if hook.poll() is None:
            hook.kill()
            hook.communicate()
        if conn is not None:
            conn.close()
        silent.close()


def run_check(tmp: Path, conf_text: Optional[str]) -> subprocess.CompletedProcess:
    """``fence-hook --check --config CONF`` (CONF missing if ``conf_text`` is None)."""
    conf = tmp / "scoutfs-fenced.conf"
    if conf_text is not None:
        conf.write_text(conf_text)
    return subprocess.run([sys.executable, "-m", "scoutfs_collect", "fence-hook", "--check", "--config",
                           str(conf)], capture_output=True, text=True, timeout=60, cwd=tmp,
                          stdin=subprocess.DEVNULL)


# the installed command, as SCOUTFS_FENCED_RUN names it
COMMAND = Path(sys.executable).parent / "scoutfs-collect"


def test_check_accepts_a_good_configuration(tmp_path):
    # as scoutfs-utils' example: comments, the delay, bash quoting
    result = run_check(tmp_path, f"""\
# delay, in seconds, between each check for pending fence requests.
SCOUTFS_FENCED_DELAY=1
# path to executable to run to service fence request
SCOUTFS_FENCED_RUN='{COMMAND}'
# arguments to pass to binary
SCOUTFS_FENCED_RUN_ARGS="fence-hook --grace 5 -o -i/root/.ssh/fence_key -o -lroot -- {AGENT} exit 0"
""")
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{tmp_path / 'scoutfs-fenced.conf'}: ok: ") and str(AGENT) in line, line


# (conf, [(line, key, what)]): every problem on its own line, at the line that sets the key
BAD_CONFS = {
    "not-the-hook": ("""\
# scoutfs-fenced.conf
SCOUTFS_FENCED_DELAY=1
no_such_command_in_fenced_conf
SCOUTFS_FENCED_RUN=/bin/true
SCOUTFS_FENCED_RUN_ARGS="fenc-hook --grace x --bogus -o '-i /root/key' -- /nonexistent/agent"
""", [(3, "bash", ""), (4, "SCOUTFS_FENCED_RUN", "'/bin/true' is not scoutfs-collect"),
      (5, "SCOUTFS_FENCED_RUN_ARGS", "does not start with fence-hook"),
      (5, "SCOUTFS_FENCED_RUN_ARGS", "--grace 'x': seconds"),
      (5, "SCOUTFS_FENCED_RUN_ARGS", "--bogus: unknown option"),
      (5, "SCOUTFS_FENCED_RUN_ARGS", "-o \"'-i\": No closing quotation"),
      (5, "SCOUTFS_FENCED_RUN_ARGS", "\"/root/key'\": unexpected argument"),
      (5, "SCOUTFS_FENCED_RUN_ARGS", "agent '/nonexistent/agent' does not exist")]),
    "not-executable": ("""\
SCOUTFS_FENCED_RUN=/nonexistent/scoutfs-collect
SCOUTFS_FENCED_RUN_ARGS="fence-hook --grace"
""", [(1, "SCOUTFS_FENCED_RUN", "'/nonexistent/scoutfs-collect' does not exist"),
      (2, "SCOUTFS_FENCED_RUN_ARGS", "--grace: missing its value"),
      (2, "SCOUTFS_FENCED_RUN_ARGS", "no -- AGENT")]),
    "nothing-after": (f"""\
SCOUTFS_FENCED_RUN={COMMAND}
export SCOUTFS_FENCED_RUN_ARGS="fence-hook --check --"
""", [(2, "SCOUTFS_FENCED_RUN_ARGS", "--check: not with -- AGENT"),
      (2, "SCOUTFS_FENCED_RUN_ARGS", "nothing after --")]),
    "agent-not-executable": (f"""\
SCOUTFS_FENCED_RUN={COMMAND}
SCOUTFS_FENCED_RUN_ARGS="fence-hook -- {{tmp}}/agent"
""", [(2, "SCOUTFS_FENCED_RUN_ARGS", "/agent' is not executable")]),
    "agent-not-on-path": (f"""\
SCOUTFS_FENCED_RUN={COMMAND}
SCOUTFS_FENCED_RUN_ARGS="fence-hook -- no_such_fence_agent"
""", [(2, "SCOUTFS_FENCED_RUN_ARGS", "agent 'no_such_fence_agent' not found")]),
    "empty": ("", [(0, "SCOUTFS_FENCED_RUN", "not set"),
                   (0, "SCOUTFS_FENCED_RUN_ARGS", "does not start with fence-hook"),
                   (0, "SCOUTFS_FENCED_RUN_ARGS", "no -- AGENT")]),
}


@pytest.mark.parametrize("case", BAD_CONFS)
def test_check_reports_every_problem(tmp_path, case):
    text, expected = BAD_CONFS[case]
    (tmp_path / "agent").write_text("#!/bin/sh\n")  # not executable
    result = run_check(tmp_path, text.replace("{tmp}", str(tmp_path)))
    conf = tmp_path / "scoutfs-fenced.conf"
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(expected), result.stdout
    for line, key, what in expected:
        prefix = f"{conf}:{line}: {key}: " if line else f"{conf}: {key}: "
        assert [ln for ln in lines if ln.startswith(prefix) and what in ln and "; fix: " in ln], \
            (prefix, what, result.stdout)


def test_check_of_a_missing_configuration_is_one_line(tmp_path):
    result = run_check(tmp_path, None)
    assert result.returncode == 2
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{tmp_path / 'scoutfs-fenced.conf'}: cannot read it"), line


def test_without_an_agent_one_line_error(tmp_path):
    # nothing to run: a plain usage error
    for argv in (["fence-hook"], ["fence-hook", "--grace", "x"], ["fence-hook", "--"],
                 ["fence-hook", "--grace", "5", "--"], ["fence-hook", "--check", "--config"]):
        result = subprocess.run([sys.executable, "-m", "scoutfs_collect", *argv], capture_output=True,
                                text=True, timeout=30, cwd=tmp_path)
        assert result.returncode == 2, argv
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:"), argv


def test_help_tells_about_check(tmp_path):
    result = subprocess.run([sys.executable, "-m", "scoutfs_collect", "fence-hook", "--help"],
                            capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode == 0
    assert "--check" in result.stdout and "--config PATH" in result.stdout
    assert "AGENT still runs" in result.stdout
