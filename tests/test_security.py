"""Security through the real CLI: private files whatever the umask, no symlink followed at
a predictable path, profile values never reach a shell, profiles loaded safely, nothing
secret printed; and a lint rule that keeps ``shell=True`` out of the code for good.
"""

from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from scoutfs_collect.system.paths import run_stem
from tests.support.cli import finish
from tests.support.helpers import extract, unique
from tests.test_faults import archive_of

REPO = Path(__file__).resolve().parent.parent
SOURCES = [REPO / "scoutfs_collect", REPO / "plugins"]

SIMPLE = """\
settings: {compression: zstd, min_free_mb: 1}
collectors:
  marker: {type: test-marker}
  sysinfo: {}
  dmesg: {}
triggers:
  end: {type: timer, after: 0.2}
"""


# --- modes and paths ----------------------------------------------------------------


def test_everything_written_is_private_even_under_umask_0(cli):
    done = subprocess.run(cli.argv(*cli.capture_args(cli.profile(SIMPLE), "--keep-workdir")),
                          env=cli.env, cwd=cli.tmp, capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: os.umask(0))
    assert done.returncode == 0, done.stderr
    archive = Path(archive_of(done.stdout))
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    workdir = archive.parent / archive.name[: -len(".tar.zst")]
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
    loose = []
    for root, dirs, files in os.walk(workdir):
        for name in dirs + files:
            mode = stat.S_IMODE(os.lstat(os.path.join(root, name)).st_mode)
            if mode & 0o077:
                loose.append(f"{oct(mode)} {os.path.join(root, name)}")
    assert loose == []
    # Root's tar restores modes as archived: nothing may come out group/world-accessible.
    listing = subprocess.run(["tar", "-tvaf", str(archive)], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    assert listing and all(line[4:10] == "------" for line in listing), listing
    events = cli.events.stat()
    assert stat.S_IMODE(events.st_mode) & 0o022 == 0


def test_symlinks_planted_at_the_work_dir_names_are_not_followed(cli, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    now = time.time()
    for t in range(-1, 30):  # every name the run could pick in the next half minute
        (cli.out / run_stem(now + t)).symlink_to(victim)
    done = cli.run(*cli.capture_args(cli.profile(SIMPLE), "--keep-workdir"))
    assert done.returncode == 0, done.stderr
    assert list(victim.iterdir()) == []
    started = next(e for e in cli.event_list() if e["event"] == "started")
    workdir = Path(started["workdir"])
    assert not workdir.is_symlink() and workdir.is_dir() and workdir.name.endswith(".1")
    assert archive_of(done.stdout) == str(workdir) + ".tar.zst"


def test_symlink_planted_at_the_archive_name_is_refused(cli, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    profile = cli.profile(SIMPLE.replace("type: timer, after: 0.2", "type: test-never"))
    proc = cli.start(*cli.capture_args(profile))
    workdir = Path(cli.wait_event("started", proc)["workdir"])
    cli.wait_event("armed", proc)
    planted = cli.out / (workdir.name + ".tar.zst")
    planted.symlink_to(victim)
    proc.terminate()
    code, out, err = finish(proc)
    assert code == 3, err
    assert "refusing to overwrite" in err
    assert f"no archive written; work dir kept: {workdir}" in err
    assert victim.read_text() == "precious\n"
    assert planted.is_symlink() and os.readlink(planted) == str(victim)
    assert sorted(p.name for p in cli.out.iterdir()) == sorted([workdir.name, planted.name])


# Loaded by the CLI's Python (PYTHONPATH) in the test below: once armed, the main thread
# takes the lock of the stop inbox (as it does when the disk watchdog posts its stop) and
# signals itself while holding it: the handler runs right there, before the next line.
SIGNAL_INSIDE_THE_WAIT = """\
import os, signal
from scoutfs_collect.core import runner

_wait, _handle = runner.wait_armed, runner.Runner.handle_signal


def _wait_after_a_signal_inside_it(inbox, *args, **kwargs):
    with inbox._lock:  # the lock post() holds around its bookkeeping
        os.kill(os.getpid(), signal.SIGTERM)  # the Python handler runs before the next line
    return _wait(inbox, *args, **kwargs)


def _handle_noting_the_lock(self, signum):
    with open(os.environ["SIGNAL_NOTES"], "a") as f:
        f.write(f"handled while the lock was held: {self.inbox._lock.locked()}\\n")
    _handle(self, signum)


runner.wait_armed = _wait_after_a_signal_inside_it
runner.Runner.handle_signal = _handle_noting_the_lock
"""


def test_sigterm_landing_inside_the_wait_for_a_trigger_still_stops_the_run(cli, tmp_path):
    """The handler of SIGTERM runs in the main thread, wherever it is: inside the wait for
    a trigger it used to wait for the lock that wait held, and the run hung for good
    (test_symlink_planted_at_the_archive_name_is_refused, under load). The handler now
    takes no lock (core/stop.py); here the signal lands inside the inbox's lock every time."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SIGNAL_INSIDE_THE_WAIT)
    cli.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(inject), cli.env.get("PYTHONPATH")]))
    cli.env["SIGNAL_NOTES"] = str(tmp_path / "notes")
    profile = cli.profile(SIMPLE.replace("type: timer, after: 0.2", "type: test-never"))
    proc = cli.start(*cli.capture_args(profile))
    code, out, err = finish(proc, timeout=30)  # it hung here: the handler waited for itself
    assert (tmp_path / "notes").read_text() == "handled while the lock was held: True\n"
    assert code == 0, err
    trigger = next(e for e in cli.event_list() if e["event"] == "triggered")
    assert (trigger["trigger"], trigger["reason"]) == ("operator", "SIGTERM from the operator")
    assert Path(archive_of(out)).is_file()


@pytest.mark.parametrize("victim_exists", [False, True], ids=["dangling", "to-a-file"])
def test_symlink_planted_at_the_lock_is_refused(cli, tmp_path, victim_exists):
    victim = tmp_path / "victim-lock"
    if victim_exists:
        victim.write_text("precious\n")
    (tmp_path / "run").mkdir(mode=0o700)
    (tmp_path / "run" / "lock").symlink_to(victim)
    done = cli.run(*cli.capture_args(cli.profile(SIMPLE)))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"host lock {tmp_path / 'run' / 'lock'} is a symlink" in done.stderr
    assert victim.exists() == victim_exists
    assert not victim_exists or victim.read_text() == "precious\n"
    assert list(cli.out.iterdir()) == []


# --- no shell, safe profiles ---------------------------------------------------------


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / unique("pwned")
    yield path
    assert not path.exists(), "a profile value was run by a shell"


@pytest.mark.parametrize("setting, needle", [
    ("collectors.tcpdump.interface='lo; touch {c}'", "is not a valid interface name"),
    ("collectors.tcpdump.interface='$(touch {c})'", "is not a valid interface name"),
    ("collectors.tcpdump.extra_filter='udp; touch {c}'", "tcpdump refuses the capture filter"),
    ("collectors.tcpdump.extra_filter='`touch {c}`'", "tcpdump refuses the capture filter"),
    ("collectors.ftrace.instance='x; touch {c}'", "bad tracefs instance name 'x; touch"),
    ("collectors.ftrace.events=['sched:$(touch {c})']", "bad event 'sched:$(touch"),
])
def test_shell_syntax_in_profile_values_is_refused_never_run(cli, canary, setting, needle):
    profile = cli.profile("collectors:\n  tcpdump: {interface: lo, heartbeat_timeout: 0}\n"
                          "  ftrace: {buffer_size_kb: 256, events: ['sched:sched_switch']}\n"
                          "triggers:\n  end: {type: timer, after: 1}\n")
    done = cli.run("check", "--profile", str(profile), "--output-dir", str(cli.out),
                   "--set", setting.format(c=canary), "127.0.0.1", "7001")
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr
    assert list(cli.out.iterdir()) == []


def test_filter_with_shell_operators_reaches_tcpdump_as_one_argument(cli):
    # Valid pcap syntax that a shell would split at '&&' and run the rest: accepted, so
    # tcpdump -d compiled it whole.
    profile = cli.profile("collectors:\n  tcpdump: {interface: lo, heartbeat_timeout: 0}\n"
                          "triggers:\n  end: {type: timer, after: 1}\n")
    done = cli.run("check", "--profile", str(profile), "--output-dir", str(cli.out), "--set",
                   "collectors.tcpdump.extra_filter='udp && !(udp port 9) || (tcp && tcp)'",
                   "127.0.0.1", "7001")
    assert done.returncode == 0, done.stderr
    assert "check: ready to run" in done.stderr


@pytest.mark.parametrize("how", ["profile", "set"])
def test_yaml_tags_that_would_run_code_are_refused(cli, canary, how):
    payload = f"!!python/object/apply:os.system ['touch {canary}']"
    if how == "profile":
        profile = cli.profile(f"description: {payload}\ncollectors: {{marker: {{type: test-marker}}}}\n")
        done = cli.run(*cli.capture_args(profile))
    else:
        profile = cli.profile("collectors: {marker: {type: test-marker}}\n")
        done = cli.run(*cli.capture_args(profile, "--set", f"collectors.marker.text={payload}"))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert list(cli.out.iterdir()) == []


SHELL_FUNCS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
               ("subprocess", "getstatusoutput"), ("os", "execl"), ("os", "spawnl")}


def shell_uses(path: Path) -> List[str]:
    """Calls that hand a string to a shell: shell=<anything but False>, os.system & co,
    and argv lists that start a shell with -c."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        where = f"{os.path.relpath(path, REPO)}:{node.lineno}"
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                found.append(f"{where}: shell=")
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
                and (f.value.id, f.attr) in SHELL_FUNCS:
            found.append(f"{where}: {f.value.id}.{f.attr}")
        for arg in node.args[:1]:
            if isinstance(arg, ast.List) and len(arg.elts) >= 2 and all(
                    isinstance(e, ast.Constant) for e in arg.elts[:2]):
                prog, flag = arg.elts[0].value, arg.elts[1].value
                if str(prog).rsplit("/", 1)[-1] in ("sh", "bash", "dash") and flag == "-c":
                    found.append(f"{where}: {prog} -c")
    return found


def test_no_shell_anywhere_in_the_code():
    files = [p for d in SOURCES for p in sorted(d.rglob("*.py"))]
    assert len(files) > 20
    assert [u for p in files for u in shell_uses(p)] == []


def test_the_scanner_sees_shell_uses(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os, subprocess\nsubprocess.run('ls', shell=True)\nos.system('ls')\n"
                   "subprocess.run(['/bin/sh', '-c', 'ls'])\nsubprocess.run('x', shell=1)\n")
    assert len(shell_uses(bad)) == 4


def test_ruff_with_the_project_config_flags_shell_true(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nimport subprocess\n\n\ndef f(cmd, run):\n"
                   "    subprocess.run(cmd, shell=True)\n"
                   "    run(cmd, shell=True)\n"
                   "    os.system(cmd)\n")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config",
                           str(REPO / "pyproject.toml"), "--output-format", "concise", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    for code, line in (("S602", 6), ("S604", 7), ("S605", 8)):
        assert f"bad.py:{line}:5: {code}" in done.stdout, done.stdout


# --- nothing secret printed ------------------------------------------------------------


def test_secrets_in_the_environment_are_not_printed_or_archived(cli, tmp_path):
    secret = unique("s3cr3t")
    env = dict(cli.env, SCOUTFS_TEST_TOKEN=secret, AWS_SECRET_ACCESS_KEY=secret)
    done = subprocess.run(cli.argv(*cli.capture_args(cli.profile(SIMPLE))), env=env, cwd=cli.tmp,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout + done.stderr + cli.events.read_text()
    archive = archive_of(done.stdout)
    top = extract(archive, tmp_path / "x")
    leaks = [str(p) for p in top.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == []


def test_output_dir_on_scoutfs_is_refused(tmp_path):
    """The old README's rule, enforced: tracing scoutfs onto scoutfs feeds back. The mount
    table is given as data (no scoutfs can be mounted here); the check itself is real."""
    from scoutfs_collect.core.checks import check_output_dir

    table = ["/dev/vda / ext4 rw 0 0",
             f"scoutfs-data {tmp_path} scoutfs rw 0 0",
             f"tmpfs {tmp_path}/other\\040dir tmpfs rw 0 0"]
    (tmp_path / "deep").mkdir()
    (tmp_path / "other dir").mkdir()
    table = "\n".join(table)
    (problem,) = check_output_dir(tmp_path / "deep", 0, 0, table)
    assert problem.fatal and f"is on the scoutfs filesystem {tmp_path}" in problem.message
    assert "--output-dir" in problem.fix
    assert check_output_dir(tmp_path / "other dir", 0, 0, table) == []
