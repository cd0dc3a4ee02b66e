"""A small output filesystem (a real tmpfs mounted here) filled by a capture.

The watchdog must notice free space under settings.min_free_mb, stop the writing
collectors before the filesystem is full and pack with trigger type ``disk-space``; when
even the archive does not fit: exit 3, the work dir kept and named, no archive (not even
a truncated one) under the final name.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.cli import finish
from tests.test_faults import archive_of, inspect

MIB = 1 << 20


@contextlib.contextmanager
def mounted_tmpfs(mnt: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MiB at ``mnt``, always unmounted afterwards (lazily if
    something still holds it)."""
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs",
                    str(mnt)], check=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs."""
    with mounted_tmpfs(tmp_path / "small", 32) as mnt:
        yield mnt


@pytest.fixture
def fs_30(tmp_path: Path) -> Iterator[Path]:
    """A 30 MiB tmpfs."""
    with mounted_tmpfs(tmp_path / "small", 30) as mnt:
        yield mnt


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
    """Samples free space of a filesystem every ``interval`` s (2 ms) while a run goes on
    (a measurement, not a wait) and keeps the lowest value seen."""

    def __init__(self, path: Path, interval: float = 0.002) -> None:
        self.path, self.mib, self.interval = path, float("inf"), interval
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
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


@pytest.mark.once  # the compressor programs' hold-back is the subject
@pytest.mark.parametrize("compression", ["zstd", "xz", "gz"])
def test_archive_that_misses_by_less_than_the_compressor_holds_back_stops_at_the_floor(
        cli, fs_30, compression):
    # 16 MiB of incompressible data, 14 MiB free, min_free_mb 8: a packing floor of 2 MiB,
    # so the archive misses by ~4 MiB. zstd -T0 and xz -T0 hold back more than that and
    # write it after their input has ended (of 16 MiB, zstd -3 holds back ~10 MiB, xz -6
    # all of it: one block): a guard that only looks at what goes *into* the compressor
    # lets them fill the disk. What is written must stop at the floor.
    profile = cli.profile(f"""\
settings: {{compression: {compression}, min_free_mb: 8}}
collectors:
  fill: {{type: test-writer, finalize_mb: 16, random: true}}
triggers:
  now: {{type: timer, after: 0}}
""")
    proc = cli.start("--plugin-dir", str(cli.plugin_dir()), "--profile", str(profile),
                     "--output-dir", str(fs_30), "--events-file", str(cli.events),
                     "127.0.0.1", "7001")
    with LowestFree(fs_30, interval=0.0002) as lowest:
        code, out, err = finish(proc, timeout=120)
    assert code == 3, err
    assert "No space left on device" not in err  # the compressor never hit the full disk
    assert "stopped packing" in err and "below the floor of 2 MiB" in err
    # Never under the floor, give or take the pages of the run's own last log lines.
    assert lowest.mib > 2 - 0.1, f"free space fell to {lowest.mib:.2f} MiB"
    (workdir,) = list(fs_30.iterdir())  # the temporary archive is gone
    assert f"no archive written; work dir kept: {workdir}" in err
    assert f"scoutfs-collect pack {workdir}" in err
    assert (workdir / "fill" / "blob.bin").stat().st_size == 16 * MIB
    assert free_mib(fs_30) > 10  # ~14 MiB; the partial archive would have left ~2
