"""The distribution as support uses it: the one-file pex on a node whose python3 is 3.6, the
offline wheelhouse, the man page and completion, the systemd unit.

Everything runs from a directory outside the checkout, with interpreters that are not the
build's (pyenv's 3.6, 3.9 and 3.13), in a clean environment."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, List

import pytest

from scoutfs_collect.core import arguments
from tests.support.dist import Dist, NodePath, build_dist, make_node_path, node_env, pyenv_python
from tests.support.helpers import wait_for

# The built pex and wheelhouse on other Pythons are the subject, not the Python running pytest.
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parents[1]
ARCHES = ("x86_64", "aarch64")
PYTHONS = ("39", "310", "311", "312", "313")


@pytest.fixture(scope="session")
def dist() -> Dist:
    return build_dist()


@pytest.fixture(scope="session")
def node(tmp_path_factory) -> NodePath:
    """A RHEL 8 node with python3.9 installed: ``python3`` is 3.6, 3.9 is ``python3.9``."""
    return make_node_path(tmp_path_factory.mktemp("node"), [pyenv_python("3.6"), pyenv_python("3.9")])


@pytest.fixture(scope="session")
def pex_root(tmp_path_factory) -> Path:
    """One PEX_ROOT for the session's pex runs (the first run lays out the venv)."""
    return tmp_path_factory.mktemp("pex-root")


def run_pex(dist: Dist, env: Dict[str, str], cwd: Path, *args: str, timeout: float = 180):
    return subprocess.run([str(dist.pex), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_version_is_the_installed_package_version():
    from importlib.metadata import version

    done = subprocess.run([sys.executable, "-m", "scoutfs_collect", "--version"], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == f"scoutfs-collect {version('scoutfs-collect')}"


def test_pex_is_one_file_with_wheels_for_both_arches_and_every_python(dist):
    assert dist.pex.stat().st_size <= 15 * 1024 * 1024
    assert dist.pex.read_bytes()[:10] == b"#!/bin/sh\n"
    with zipfile.ZipFile(dist.pex) as pex:
        info = json.loads(pex.read("PEX-INFO"))
    wheels = list(info["distributions"])
    assert info["interpreter_constraints"] == ["CPython<3.14,>=3.9"]
    for arch in ARCHES:
        assert any(w.startswith("psutil-") and arch in w for w in wheels), (arch, wheels)
        for py in PYTHONS:
            assert any(w.startswith("pyyaml-") and f"-cp{py}-cp{py}-" in w and arch in w for w in wheels), \
                (arch, py, wheels)
    assert any(w.startswith("pluggy-") for w in wheels)
    assert f"scoutfs_collect-{dist.version}-py3-none-any.whl" in wheels


def test_pex_on_a_node_whose_python3_is_36_runs_on_39(dist, node, pex_root, tmp_path):
    env = node_env(node, tmp_path, pex_root)
    version = run_pex(dist, env, tmp_path, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"scoutfs-collect {dist.version}")

    check = run_pex(dist, env, tmp_path, "check", "--profile", "demo", "127.0.0.1", "7000")
    assert check.returncode == 0, check.stderr
    assert check.stderr.splitlines()[-1] == "check: ready to run", check.stderr

    out = tmp_path / "out"
    out.mkdir()
    done = run_pex(dist, env, tmp_path, "--profile", "demo", "--output-dir", str(out), "127.0.0.1", "7000")
    assert done.returncode == 0, done.stderr[-3000:]
    archive = Path(done.stdout.strip().splitlines()[-1].split("archive: ", 1)[1])
    assert archive.parent == out and archive.is_file()

    shown = run_pex(dist, env, tmp_path, "inspect", str(archive))
    assert shown.returncode == 0, shown.stderr
    assert "scoutfs-fence" in shown.stdout  # the simulated fence request ended the run
    manifest = json.loads(run_pex(dist, env, tmp_path, "inspect", "--json", str(archive)).stdout)
    assert manifest["tool"]["version"] == dist.version
    assert manifest["tool"]["python"].startswith("3.9."), manifest["tool"]
    assert all(p["status"] == "ok" for p in manifest["plugins"].values()), manifest["plugins"]


@pytest.mark.parametrize("args", [["--version"], ["--profile", "default", "10.0.0.1", "7000"]])
def test_pex_with_only_python36_says_what_to_install(dist, tmp_path, args):
    only_36 = make_node_path(tmp_path / "node36", [pyenv_python("3.6")])
    done = run_pex(dist, node_env(only_36, tmp_path, tmp_path / "pex-root"), tmp_path, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Python 3.6" in lines[0] and "dnf install python3.11" in lines[0]
    assert not (tmp_path / "pex-root").exists() or not any((tmp_path / "pex-root").iterdir())


def test_pex_lays_itself_out_where_only_root_can_write(dist, node, tmp_path):
    """Without PEX_ROOT the pex extracts into /var/cache/scoutfs-collect (0700), never into
    HOME's cache, even when HOME is a directory anyone can write to (sudo keeping HOME)."""
    cache = Path("/var/cache/scoutfs-collect")
    existed = cache.exists()
    env = node_env(node, tmp_path, None)
    home = Path(env["HOME"])
    os.chmod(home, 0o1777)
    try:
        done = run_pex(dist, env, tmp_path, "--version")
        assert done.returncode == 0, done.stderr
        st = cache.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)
        assert any((cache / "pex").iterdir())
        assert not (home / ".cache").exists() and not (home / ".pex").exists()
    finally:
        if not existed:
            shutil.rmtree(cache, ignore_errors=True)


def test_wheelhouse_installs_offline_into_a_fresh_python313_venv(dist, tmp_path):
    with tarfile.open(dist.wheelhouse) as tar:
        tar.extractall(tmp_path)
    (wheels,) = [p for p in tmp_path.iterdir() if p.name.startswith("scoutfs-collect-wheels-")]
    venv = tmp_path / "venv"
    subprocess.run([str(pyenv_python("3.13")), "-m", "venv", str(venv)], check=True)
    # No pip configuration either: this machine's pip.conf names local mirrors.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull}
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", "--find-links", str(wheels),
                          "--disable-pip-version-check", "scoutfs-collect"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    exe = str(venv / "bin" / "scoutfs-collect")
    version = subprocess.run([exe, "--version"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert version.stdout.strip() == f"scoutfs-collect {dist.version}"
    listed = subprocess.run([exe, "plugins", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    here = subprocess.run([sys.executable, "-m", "scoutfs_collect", "plugins", "--json"],
                          capture_output=True, text=True, check=True)
    assert {t["type"] for t in json.loads(listed.stdout)} == {t["type"] for t in json.loads(here.stdout)}


def test_man_page_names_every_subcommand_and_renders_cleanly(dist):
    text = dist.man_page.read_text()
    assert text.startswith('.TH SCOUTFS\\-COLLECT "8"')
    for command in arguments.COMMANDS:
        roff = command.replace("-", "\\-")  # roff escapes every hyphen
        assert f"'scoutfs\\-collect {roff}'" in text, command
    rendered = subprocess.run(["man", "--warnings", "-l", str(dist.man_page)], capture_output=True,
                              text=True, env={**os.environ, "MANPAGER": "cat", "MAN_KEEP_FORMATTING": ""})
    assert rendered.returncode == 0 and rendered.stderr == "", rendered.stderr
    assert "--output-dir" in rendered.stdout.replace("\u2010", "-")


def _complete(script: Path, words: List[str]) -> List[str]:
    """What bash offers for ``words`` (the last one being typed), through the generated script."""
    line = " ".join(f"'{w}'" for w in words)
    program = (f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
               f"COMP_LINE=\"{' '.join(words)}\"; COMP_POINT=${{#COMP_LINE}}; "
               "_shtab_scoutfs_collect; printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_completion_offers_every_subcommand_and_their_options(dist):
    assert set(_complete(dist.bash_completion, ["scoutfs-collect", ""])) >= set(arguments.COMMANDS)
    assert "--output-dir" in _complete(dist.bash_completion, ["scoutfs-collect", "run", "--o"])


UNIT = ROOT / "contrib" / "systemd" / "scoutfs-collect.service"
ENV_EXAMPLE = ROOT / "contrib" / "systemd" / "scoutfs-collect.env"


def _installed_root(dist: Dist, where: Path) -> Path:
    """A root as the unit's install comments leave it: the pex at /usr/local/sbin, the unit,
    the env file, the man page, and the distribution's own units (sysinit.target...)."""
    root = where / "root"
    (root / "usr/local/sbin").mkdir(parents=True)
    shutil.copy(dist.pex, root / "usr/local/sbin/scoutfs-collect")
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system")
    (root / "etc/scoutfs-collect").mkdir()
    shutil.copy(ENV_EXAMPLE, root / "etc/scoutfs-collect/env")
    (root / "usr/share/man/man8").mkdir(parents=True)
    shutil.copy(dist.man_page, root / "usr/share/man/man8")
    system_units = next(p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
                        if (p / "sysinit.target").exists())
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    return root


def test_systemd_unit_verifies(dist, tmp_path):
    root = _installed_root(dist, tmp_path)
    done = subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                           "/etc/systemd/system/scoutfs-collect.service"],
                          capture_output=True, text=True,
                          env={**os.environ, "MANPATH": str(root / "usr/share/man")})
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def _unit_settings(text: str) -> Dict[str, List[str]]:
    settings: Dict[str, List[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _exec_start_argv(unit: Dict[str, List[str]], env: Dict[str, str], exe: str) -> List[str]:
    """ExecStart as systemd expands it: ${VAR} one word, $VAR split on spaces."""
    argv: List[str] = []
    for word in unit["ExecStart"][0].split():
        if word.startswith("${") and word.endswith("}"):
            argv.append(env.get(word[2:-1], ""))
        elif word.startswith("$"):
            argv.extend(env.get(word[1:], "").split())
        else:
            argv.append(word)
    assert argv[0] == "/usr/local/sbin/scoutfs-collect"
    return [exe] + argv[1:]


def test_systemctl_stop_packs_an_archive(dist, node, pex_root, tmp_path):
    """What `systemctl stop` does to the unit, done by hand: PID 1 here is not systemd, so
    the unit cannot be started for real. The unit's Environment= defaults and the example env
    file (with the demo profile, and an events file through EXTRA_ARGS) give ExecStart's
    arguments; then KillSignal goes to the main process only (KillMode=mixed)."""
    unit = _unit_settings(UNIT.read_text())
    assert unit["Restart"] == ["no"] and unit["KillSignal"] == ["SIGINT"] and unit["KillMode"] == ["mixed"]
    env = dict(v.split("=", 1) for v in unit["Environment"])
    env.update({key: values[-1] for key, values in _unit_settings(ENV_EXAMPLE.read_text()).items()})
    out = tmp_path / "state"
    out.mkdir(mode=0o700)
    events = tmp_path / "events.jsonl"
    env.update(IP="127.0.0.1", PORT="7000", PROFILE="demo", OUTPUT_DIR=str(out),
               EXTRA_ARGS="--set triggers.demo-fence=null --set triggers.demo-timer=null "
                          f"--events-file {events}")
    argv = _exec_start_argv(unit, env, str(dist.pex))
    proc = subprocess.Popen(argv, env=node_env(node, tmp_path, pex_root), cwd="/", stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: events.exists() and '"armed"' in events.read_text() or proc.poll() is not None,
                 120, "the run to be armed")
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(getattr(signal, unit["KillSignal"][0]))
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    archive = Path(stdout.strip().splitlines()[-1].split("archive: ", 1)[1])
    assert archive.parent == out
    manifest = json.loads(run_pex(dist, node_env(node, tmp_path, pex_root), tmp_path,
                                  "inspect", "--json", str(archive)).stdout)
    assert manifest["trigger"]["type"] == "operator"
