"""What a killed cluster coordinator leaves in its bundle directory (the staging
directory of copied node archives, the partial bundle) is removed by the next run, and
nothing another run is still writing or holding open is touched."""

from __future__ import annotations

import os
import time
from pathlib import Path

from scoutfs_collect.cluster import gather


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    for p in [*path.rglob("*"), path] if path.is_dir() else [path]:
        os.utime(p, (old, old), follow_symlinks=False)


def test_a_killed_coordinators_leftovers_are_removed_and_nothing_live(tmp_path: Path):
    stale = tmp_path / ".scoutfs-collect-cluster.20261203-101010Z.staging"
    (stale / "nodes" / "n1").mkdir(parents=True)
    (stale / "nodes" / "n1" / "a.tar.zst").write_bytes(b"z" * (3 << 20))
    _age(stale, 3600)
    partial = tmp_path / ".scoutfs-collect-cluster.20261203-101010Z.tar.partial"
    partial.write_bytes(b"p" * 1000)
    _age(partial, 3600)
    fresh = tmp_path / ".scoutfs-collect-cluster.20261203-111111Z.staging"  # a run gathering now
    (fresh / "nodes").mkdir(parents=True)
    (fresh / "nodes" / "copy").write_bytes(b"c")
    held = tmp_path / ".scoutfs-collect-cluster.20261203-121212Z.tar.partial"
    held.write_bytes(b"h")
    _age(held, 3600)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_bytes(b"k")
    link = tmp_path / ".scoutfs-collect-cluster.20261203-131313Z.staging"
    link.symlink_to(target)
    bundle = tmp_path / "scoutfs-collect-cluster.20261203-090909Z.tar"  # a finished bundle
    bundle.write_bytes(b"b")
    _age(bundle, 3600)

    with open(held, "rb"):  # a writer still has it open (long stall): it is not stale
        notes = gather.remove_leftovers(tmp_path)

    assert not stale.exists() and not partial.exists()
    assert fresh.is_dir() and held.exists() and bundle.exists()
    assert link.is_symlink() and (target / "keep").exists()
    assert len(notes) == 2
    assert any(str(stale) in n and "3.0 MiB" in n and "killed while gathering" in n for n in notes)
    assert any(str(partial) in n and "partial bundle" in n for n in notes)
    # closed now, and unwritten for an hour: the next run removes it, and only it
    (again,) = gather.remove_leftovers(tmp_path)
    assert str(held) in again and not held.exists() and fresh.is_dir() and bundle.exists()
