"""The guard on global tracefs files (the ``tracefs_untouched`` fixture of conftest.py):
it must catch a write of this test's processes, and must not blame this test for what
another process on the machine writes meanwhile. Each write here puts back the value the
file already holds (tracing_on: writing its own state changes nothing)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from scoutfs_collect.system import tracefs
from tests.support.helpers import wait_for
from tests.support.tracefs_watch import GONE, OTHER, OURS, WriteWatch

TRACING_ON = tracefs.DEFAULT_ROOT / "tracing_on"


def _rewrite(path: Path) -> None:
    """Write ``path`` its own value, from this process."""
    value = path.read_bytes()
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value)
    finally:
        os.close(fd)


def test_a_write_of_this_process_or_its_child_is_ours():
    """Found whatever the value written (its own here): the fixture fails on it."""
    with WriteWatch([TRACING_ON]) as watch:
        assert watch.available, watch.why
        _rewrite(TRACING_ON)
        child = subprocess.Popen(["sh", "-c", f"v=$(cat {TRACING_ON}); printf %s \"$v\" > {TRACING_ON}; "
                                  "read line"], stdin=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: len(watch.writes) == 2, 10, "the child's write")
        finally:
            child.communicate("done\n", timeout=30)
    assert [(w.path, w.whose) for w in watch.writes] == [(str(TRACING_ON), OURS)] * 2, watch.writes


def test_a_write_of_another_process_is_not_ours(tmp_path):
    """A process that is no descendant of this one (its parent exits at once, so it is
    adopted by init) writes the file; it lives until the watch has seen the write."""
    go, done = tmp_path / "go", tmp_path / "done"
    os.mkfifo(go)
    os.mkfifo(done)
    script = (f"( read x < {go}; v=$(cat {TRACING_ON}); printf %s \"$v\" > {TRACING_ON}; "
              f"read y < {done} ) > /dev/null 2>&1 &")
    with WriteWatch([TRACING_ON]) as watch:
        assert watch.available, watch.why
        subprocess.run(["sh", "-c", script], check=True, timeout=30)  # returns at once: an orphan
        with open(go, "w") as f:
            f.write("go\n")
        wait_for(lambda: watch.writes, 10, "the other process's write")
        with open(done, "w") as f:
            f.write("done\n")
    assert [(w.path, w.whose) for w in watch.writes] == [(str(TRACING_ON), OTHER)], watch.writes
    assert {OURS: [], GONE: []} == {k: v for k, v in watch.by_whom().items() if k != OTHER}
