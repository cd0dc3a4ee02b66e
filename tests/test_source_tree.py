"""A checkout runs without an install: ``PYTHONPATH=CHECKOUT python -m scoutfs_collect`` in a
Python that has only the dependencies lists every built-in plugin and checks the demo profile."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from scoutfs_collect import source_tree
from scoutfs_collect.core import registry
from tests.support.cli import cli_env
from tests.support.helpers import new_venv

REPO = Path(__file__).resolve().parents[1]


def runtime_requirements() -> list:
    """The dependencies scoutfs-collect declares, without the extras (test, dist)."""
    requires = importlib.metadata.requires("scoutfs-collect") or []
    return [r.split(";")[0].strip() for r in requires if "extra ==" not in r]


@pytest.fixture(scope="module")
def deps_only(tmp_path_factory):
    """A fresh venv with scoutfs-collect's dependencies and not scoutfs-collect, and a clean
    copy of the checkout (what a clone is: no build, no egg-info, no venvs)."""
    where = tmp_path_factory.mktemp("checkout")
    venv = where / "venv"
    pip = new_venv(venv)
    py = venv / "bin" / "python"
    reqs = runtime_requirements()
    assert any(r.lower().startswith("pluggy") for r in reqs), reqs
    subprocess.run([*pip, "install", "-q", "--disable-pip-version-check", *reqs],
                   check=True, capture_output=True, cwd=where)
    checkout = where / "scoutfs-collect"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(
        ".*", "build", "dist", "__pycache__", "*.egg-info", "demo-output"))
    return py, checkout


def run(py: Path, checkout: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = cli_env(tmp_path)
    env["PYTHONPATH"] = str(checkout)
    env.pop("SCOUTFS_COLLECT_LOAD_PLUGINS", None)
    return subprocess.run([str(py), "-m", "scoutfs_collect", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_a_checkout_without_install_has_every_builtin_plugin(deps_only, tmp_path):
    py, checkout = deps_only
    absent = subprocess.run([str(py), "-c", "import scoutfs_collect"], capture_output=True, cwd=tmp_path)
    assert absent.returncode != 0  # the venv really has only the dependencies

    listed = run(py, checkout, tmp_path, "plugins", "--json")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    plugins = {p["type"]: p["plugin"] for p in json.loads(listed.stdout)}
    assert set(plugins) == set(registry.BUILTIN_PLUGINS)
    assert all(src == f"scoutfs-collect (built-in): {t}" for t, src in plugins.items())

    check = run(py, checkout, tmp_path, "check", "--profile", "demo", "127.0.0.1", "7000")
    assert check.returncode == 0, check.stderr
    assert check.stderr.splitlines()[-1] == "check: ready to run", check.stderr
    assert not list(checkout.glob("scoutfs_collect/builtin_plugins"))  # nothing was laid out


def test_the_source_tree_mapping_is_pyprojects_package_dir():
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-dir]\n", 1)[1].split("\n[", 1)[0]
    mapping = dict(re.findall(r'^"([\w.]+)" = "([\w./]+)"$', section, re.M))
    mapping.pop("scoutfs_collect")
    assert mapping == source_tree.PACKAGE_DIRS
