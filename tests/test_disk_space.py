"""A small output filesystem (a real tmpfs mounted here) filled by a capture.

The watchdog must notice free space under settings.min_free_mb, stop the writing
collectors before the filesystem is full and pack with trigger type ``disk-space``; when
even the archive does not fit: exit 3, the work dir kept and named, no archive (not even
a truncated one) under the final name.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.cli import finish
from tests.test_faults import archive_of, inspect

MIB = 1 << 20


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs, always unmounted afterwards (lazily if something still holds it)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0755", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def free_mib(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / MIB


def filling_run(cli, out: Path, random: bool, floor: int = 12):
    # 8 MiB/s against a floor of 12 MiB and a watchdog that looks once a second: the
    # writer is stopped with at least ~4 MiB still free.
    profile = cli.profile(f"""\
settings: {{compression: zstd, min_free_mb: {floor}}}
collectors:
  marker: {{type: test-marker}}
  fill: {{type: test-writer, rate_mb: 8, random: {str(random).lower()}}}
triggers:
  never: {{type: test-never}}
""")
    proc = cli.start("--plugin-dir", str(cli.plugin_dir()), "--profile", str(profile),
                     "--output-dir", str(out), "--events-file", str(cli.events),
                     "127.0.0.1", "7001")
    with LowestFree(out) as lowest:
        result = finish(proc, timeout=60)
    # Never the disk filled to 100 % by us: not while capturing, not while packing.
    assert lowest.mib > 0.5, f"free space fell to {lowest.mib:.2f} MiB"
    return result


class LowestFree:
    """Samples free space of a filesystem every 2 ms while a run goes on (a measurement,
    not a wait) and keeps the lowest value seen."""

    def __init__(self, path: Path) -> None:
        self.path, self.mib = path, float("inf")
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.mib = min(self.mib, free_mib(self.path))

    def __enter__(self) -> LowestFree:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_watchdog_stops_the_writers_and_packs_with_trigger_disk_space(cli, small_fs):
    code, out, err = filling_run(cli, small_fs, random=False)
    assert code == 0, err
    archive = archive_of(out)
    assert [p.name for p in small_fs.iterdir()] == [os.path.basename(archive)]
    m = inspect(cli, archive)
    trigger = m["trigger"]
    assert trigger["name"] == "disk-space" and trigger["type"] == "disk-space"
    assert f"free space in {small_fs} fell to" in trigger["reason"]
    assert "settings.min_free_mb=12" in trigger["reason"]
    fill = m["plugins"]["fill"]
    assert fill["status"] == "ok", fill
    details = fill["details"]
    assert details["enospc"] is False
    assert 20 * MIB <= details["bytes"] < 32 * MIB
    assert details["min_free_mb"] > 1, details  # never filled by us
    assert details["stopped_at"] >= trigger["time"]
    assert m["plugins"]["marker"]["status"] == "ok"
    events = [e["event"] for e in cli.event_list()]
    assert events.index("triggered") < events.index("archive")


def test_archive_that_does_not_fit_exits_3_and_keeps_the_work_dir(cli, small_fs):
    code, out, err = filling_run(cli, small_fs, random=True)  # incompressible
    assert code == 3, err
    assert out == ""
    (workdir,) = list(small_fs.iterdir())
    assert workdir.is_dir() and workdir.name.startswith("scoutfs-collect.")
    assert f"no archive written; work dir kept: {workdir}" in err
    assert f"scoutfs-collect pack {workdir}" in err
    assert "stopped packing" in err and "below the floor of 3 MiB" in err
    assert (workdir / "manifest.json").is_file()
    fill_bytes = (workdir / "fill" / "fill.bin").stat().st_size
    assert fill_bytes >= 20 * MIB
    # The partial archive is gone: the space it took is free again.
    assert free_mib(small_fs) > 1
    errors = [e for e in cli.event_list() if e["event"] == "error"]
    assert len(errors) == 1 and errors[0]["message"].startswith("archive failed:")
    triggered = next(e for e in cli.event_list() if e["event"] == "triggered")
    assert triggered["type"] == "disk-space"


def test_output_dir_without_room_for_the_floor_is_refused_at_preflight(cli, small_fs):
    code, out, err = filling_run(cli, small_fs, random=False, floor=64)
    assert code == 2, err
    assert f"output dir {small_fs} has 32 MiB free" in err
    assert "settings.min_free_mb=64" in err
    assert list(small_fs.iterdir()) == []
