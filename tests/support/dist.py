"""What the distribution tests (test_dist.py) share: the built dist/ (tools/build-dist.sh, once per session),
the pyenv interpreters that stand for a node's Pythons, and a node's PATH made of them."""

from __future__ import annotations

import dataclasses
import glob
import os
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1].parent  # the checkout: tests/support/ -> tests/ -> .
#: Set by tools/test.sh after it ran tools/build-dist.sh once for every Python it tests on.
PREBUILT_ENV = "SCOUTFS_COLLECT_DIST"


@dataclasses.dataclass(frozen=True)
class Dist:
    """The files tools/build-dist.sh writes."""

    directory: Path
    version: str

    @property
    def pex(self) -> Path:
        return self.directory / "scoutfs-collect.pex"

    @property
    def wheelhouse(self) -> Path:
        return self.directory / f"scoutfs-collect-wheels-{self.version}.tar.gz"

    @property
    def man_page(self) -> Path:
        return self.directory / "scoutfs-collect.8"

    @property
    def bash_completion(self) -> Path:
        return self.directory / "completion" / "scoutfs-collect.bash"


def build_dist() -> Dist:
    """dist/ as tools/build-dist.sh makes it: reused when tools/test.sh already built it."""
    from scoutfs_collect import __version__

    prebuilt = os.environ.get(PREBUILT_ENV)
    if prebuilt:
        return Dist(Path(prebuilt), __version__)
    done = subprocess.run(["bash", "tools/build-dist.sh"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        raise AssertionError(f"tools/build-dist.sh exited {done.returncode}:\n{done.stderr[-3000:]}")
    return Dist(ROOT / "dist", __version__)


def pyenv_python(minor: str) -> Path:
    """The newest pyenv CPython ``minor`` (e.g. "3.6"): a Python that is not the build's."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = sorted(glob.glob(str(root / "versions" / f"{minor}.*" / "bin" / f"python{minor}")),
                   key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()])
    if not found:
        raise AssertionError(f"no Python {minor} under {root}/versions (pyenv install {minor})")
    return Path(found[-1])


@dataclasses.dataclass(frozen=True)
class NodePath:
    """A PATH like a node's: the system's programs without any Python, then the given Pythons.

    ``python3`` is the first interpreter given, as on RHEL 8 where it is 3.6 and a newer one
    is only there under its versioned name (``python3.9``)."""

    system: Path
    pythons: Path

    def path(self) -> str:
        return f"{self.pythons}:{self.system}"


def make_node_path(where: Path, pythons: List[Path]) -> NodePath:
    system = where / "system"
    system.mkdir(parents=True)
    for directory in ("/usr/local/sbin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        for entry in sorted(Path(directory).glob("*")) if Path(directory).is_dir() else []:
            name = entry.name
            if name.startswith(("python", "pydoc", "pip", "2to3", "idle")) or (system / name).exists():
                continue
            (system / name).symlink_to(entry)
    versions = where / "pythons"
    versions.mkdir()
    for i, python in enumerate(pythons):
        (versions / python.name).symlink_to(python)
        if i == 0:
            (versions / "python3").symlink_to(python)
    return NodePath(system, versions)


def node_env(node: NodePath, tmp: Path, pex_root: Optional[Path]) -> Dict[str, str]:
    """A clean environment as after ``ssh root@node``: the node's PATH and a HOME, plus this
    test's own lock and config dirs (other runs may be going on on this machine)."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": node.path(), "HOME": str(home), "LANG": "C.UTF-8",
           "SCOUTFS_COLLECT_RUNTIME": str(tmp / "run"), "SCOUTFS_COLLECT_ETC": str(tmp / "etc")}
    if pex_root is not None:
        env["PEX_ROOT"] = str(pex_root)
    return env
