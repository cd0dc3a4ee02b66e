"""contrib/sos/scoutfs.py run by the real sos report (the distribution's package) against a
scoutfs sysfs fixture, through sos's --sysroot.

sos loads plugins only from its own package directory. So that nothing is added to the
system's sos, the test runs a copy of that package (unchanged, plus the plugin file) with the
interpreter of the system's `sos` command.

SOS_PACKAGE=DIR runs the same tests against another sos package directory instead of the
system's, e.g. newer sos from its source repository (the `sos/` directory of a checkout of
github.com/sosreport/sos), still with the system `sos` command's interpreter."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

from scoutfs_collect.demo import fixture

# once: sos (an outside program) runs the plugin with the system sos command's interpreter,
# whichever Python runs pytest; a second Python would run the same sos on the same plugin.
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "contrib" / "sos" / "scoutfs.py"
ARCHIVE_BYTES = 26 * 1024 * 1024  # over sos's default 25 MiB log size: must not be cut


def _sos_python() -> str:
    sos = shutil.which("sos")
    assert sos, "sos is not installed (tools/setup.sh installs the sosreport package)"
    first = Path(sos).read_text().splitlines()[0]
    assert first.startswith("#!"), first
    return first[2:].split()[0]


@pytest.fixture(scope="module")
def sos_copy(tmp_path_factory) -> Path:
    python = _sos_python()
    package = os.environ.get("SOS_PACKAGE") or subprocess.run(
        [python, "-c", "import os, sos; print(os.path.dirname(sos.__file__))"],
        capture_output=True, text=True, check=True).stdout.strip()
    where = tmp_path_factory.mktemp("sos")
    shutil.copytree(package, where / "sos", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PLUGIN, where / "sos" / "report" / "plugins" / "scoutfs.py")
    return where


def _archive(directory: Path, name: str, mtime: float) -> Path:
    path = directory / name
    with open(path, "wb") as f:
        f.write(name.encode())
        f.truncate(ARCHIVE_BYTES)
    os.utime(path, (mtime, mtime))
    return path


def _sos_report(sos_copy: Path, sysroot: Path, out: Path, *options: str) -> Path:
    out.mkdir()
    # sos >= 4.7 loads its policy, which fixes the plugins' sysroot, before it parses the
    # command line (sos commit 1b2572fd): --sysroot alone is then ignored and everything
    # is read from /. Giving the policy the same sysroot as its default works on every sos.
    program = (f"import sys; sys.path.insert(0, {str(sos_copy)!r}); "
               "from sos.component import SoSComponent; "
               "SoSComponent._arg_defaults['sysroot'] = sys.argv[sys.argv.index('--sysroot') + 1]; "
               "from sos import SoS; SoS(sys.argv[1:]).execute()")
    done = subprocess.run([_sos_python(), "-c", program, "report", "--batch", "--build", "--no-report",
                           "--sysroot", str(sysroot), "-o", "scoutfs", "--tmp-dir", str(out), *options],
                          capture_output=True, text=True, timeout=300, cwd=out)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (tree,) = [p for p in out.iterdir() if p.is_dir() and p.name.startswith("sosreport-")]
    return tree


def _names(directory: Path) -> List[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def test_sos_report_takes_scoutfs_sysfs_debugfs_and_the_newest_archives(sos_copy, tmp_path):
    sysroot = tmp_path / "node"
    (mount,) = fixture.build(sysroot / "sys/fs/scoutfs")
    fixture.add_fence_request(mount, "0123456789abcdef", "127.0.0.2")
    debug = sysroot / "sys/kernel/debug/scoutfs" / mount.name
    debug.mkdir(parents=True)
    (debug / "client_locks").write_text("lock 1\n")
    env = sysroot / "etc/scoutfs-collect/env"
    env.parent.mkdir(parents=True)
    env.write_text("IP=10.0.0.1\nPORT=7000\nOUTPUT_DIR=/srv/captures\n")
    archives = sysroot / "srv/captures"
    archives.mkdir(parents=True)
    oldest = _archive(archives, "scoutfs-collect.node1.20261201-000000Z.tar.zst", 1_700_000_000)
    middle = _archive(archives, "scoutfs-collect.node1.20261202-000000Z.tar.zst", 1_700_100_000)
    newest = _archive(archives, "scoutfs-collect.node1.20261203-000000Z.tar.xz", 1_700_200_000)
    (archives / ".scoutfs-collect-abc.partial").write_bytes(b"half")

    tree = _sos_report(sos_copy, sysroot, tmp_path / "out")

    got = tree / mount.relative_to(sysroot)
    assert _names(got / "counters") == _names(mount / "counters")
    assert (got / "counters" / "block_cache_alloc_failure").read_text() == \
        (mount / "counters" / "block_cache_alloc_failure").read_text()
    assert _names(got / "fence") == ["0123456789abcdef"]
    assert (got / "fence/0123456789abcdef/ipv4_addr").read_text().strip() == "127.0.0.2"
    for part in ("quorum", "mount_options", "volume_options"):
        assert _names(got / part) == _names(mount / part), part
    assert (tree / debug.relative_to(sysroot) / "client_locks").read_text() == "lock 1\n"
    assert (tree / "etc/scoutfs-collect/env").read_text() == env.read_text()
    # The two newest finished archives, whole; not the oldest, not a partial one.
    assert _names(tree / "srv/captures") == [middle.name, newest.name]
    for archive in (middle, newest):
        assert (tree / "srv/captures" / archive.name).read_bytes() == archive.read_bytes()
    assert oldest.name not in _names(tree / "srv/captures")


def test_sos_report_archive_count_is_an_option(sos_copy, tmp_path):
    sysroot = tmp_path / "node"
    fixture.build(sysroot / "sys/fs/scoutfs")
    archives = sysroot / "var/lib/scoutfs-collect"  # the default, with no env file
    archives.mkdir(parents=True)
    for day in range(1, 4):
        _archive(archives, f"scoutfs-collect.node1.2026120{day}-000000Z.tar.zst", 1_700_000_000 + day * 1000)
    tree = _sos_report(sos_copy, sysroot, tmp_path / "out", "-k", "scoutfs.archives=3")
    assert len(_names(tree / "var/lib/scoutfs-collect")) == 3
