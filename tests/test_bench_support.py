"""The benches run the installed scoutfs-collect, whatever the install: they start it from
their scratch dir, never from the checkout (whose source tree is not the installed layout:
no scoutfs_collect.builtin_plugins or scoutfs_collect.profiles there)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.helpers import new_venv

REPO = Path(__file__).resolve().parents[1]

# What a bench does, run by the interpreter of a normal (non-editable) install.
BENCH_LIKE = """
import subprocess, sys
sys.path.insert(0, "bench")
import common as c
with c.Scratch("selftest", parent=sys.argv[1]) as scr:
    p = scr.popen(c.cli_argv("plugins"), env=c.cli_env(scr.dir), stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
sys.stdout.write(out)
sys.stderr.write(err)
sys.exit(p.returncode)
"""


def test_a_bench_run_from_the_checkout_uses_a_normal_install(tmp_path):
    venv = tmp_path / "venv"
    pip = new_venv(venv)
    py = venv / "bin" / "python"
    src = tmp_path / "src"  # pip builds in the source tree: keep the checkout clean
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".*", "build", "dist", "__pycache__",
                                                             "*.egg-info"))
    subprocess.run([*pip, "install", "-q", "--disable-pip-version-check", str(src)],
                   check=True, capture_output=True, cwd=tmp_path)
    run = subprocess.run([str(py), "-c", BENCH_LIKE, str(tmp_path)], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "not loaded" not in run.stderr, run.stderr
    listed = {line.split()[0] for line in run.stdout.splitlines() if line and not line.startswith(" ")}
    assert {"ftrace", "tcpdump", "dmesg", "kmsg", "scoutfs-fence"} <= listed
