"""Bounding the loss of a power-off without warning: while armed, what the collectors
stream is on the *disk* within settings.sync_interval, not only in the page cache.

The output dir is an ext4 on a loop device; the test reads the loop device's backing
file with O_DIRECT, which sees only what ext4 has written to its device (its own page
cache is above it), exactly what a node powered off at that instant would keep. The run
is never stopped before the read: nobody warned it."""

from __future__ import annotations

import mmap
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import List

import pytest

from scoutfs_collect.core.syncer import StreamSyncer
from tests.support.cli import finish
from tests.support.helpers import kmsg_write, unique, wait_for

SYNC_INTERVAL = 1.0
IMAGE_DIR = Path("/var/tmp")  # ext4 here: O_DIRECT works (tmpfs may refuse it)
IMAGE_PREFIX = "sfc-sync-test-"


def _loops_of(image: Path) -> List[str]:
    out = subprocess.run(["losetup", "-j", str(image), "-O", "NAME", "-n"], capture_output=True,
                         text=True).stdout
    return out.split()


def _remove_image(image: Path) -> None:
    for dev in _loops_of(image):
        for target in subprocess.run(["findmnt", "-n", "-o", "TARGET", "-S", dev], capture_output=True,
                                     text=True).stdout.split():
            subprocess.run(["umount", target], check=False)
        subprocess.run(["losetup", "-d", dev], check=False)
    image.unlink(missing_ok=True)


def _remove_leftovers() -> None:
    """Images (and their loop devices, mounts) of earlier test runs whose pid is gone."""
    for image in IMAGE_DIR.glob(f"{IMAGE_PREFIX}*.img"):
        pid = image.name[len(IMAGE_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove_image(image)


@pytest.fixture
def loop_ext4(tmp_path):
    """(mount point, backing file) of a fresh 128 MiB ext4 on a loop device."""
    _remove_leftovers()
    image = IMAGE_DIR / f"{IMAGE_PREFIX}{os.getpid()}-{unique('img')}.img"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        with open(image, "wb") as f:
            f.truncate(128 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        dev = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                             text=True).stdout.strip()
        subprocess.run(["mount", dev, str(mnt)], check=True)
        os.chmod(mnt, 0o755)
        yield mnt, image
    finally:
        _remove_image(image)


def on_disk(image: Path, needles: List[bytes]) -> List[bytes]:
    """The needles found in the backing file, read with O_DIRECT."""
    fd = os.open(image, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4 << 20)  # page-aligned, as O_DIRECT needs
    found, tail = set(), b""
    try:
        while True:
            n = os.readv(fd, [buf])
            if n <= 0:
                break
            chunk = tail + buf[:n]
            found.update(x for x in needles if x in chunk)
            tail = chunk[-256:]
    finally:
        os.close(fd)
        buf.close()
    return [x for x in needles if x in found]


def test_streamed_data_reaches_the_disk_within_sync_interval(cli, loop_ext4):
    mnt, image = loop_ext4
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = cli.profile(f"""\
settings: {{compression: gz, min_free_mb: 1, sync_interval: {SYNC_INTERVAL}}}
collectors:
  dmesg: {{max_mb: 4}}
  tcpdump: {{interface: lo, heartbeat_timeout: 0, file_size_mb: 2, file_count: 2}}
triggers:
  never: {{type: timer, after: 3600}}
""")
    proc = cli.start("--profile", str(profile), "--output-dir", str(mnt), "--events-file", str(cli.events),
                     "127.0.0.1", str(port))
    cli.wait_event("armed", proc)
    packet, line = unique("pkt-durable").encode(), unique("kmsg-durable")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(packet, ("127.0.0.1", port))
    kmsg_write(f"scoutfs-collect test {line}")
    sent = time.monotonic()
    needles = [packet, f"scoutfs-collect test {line}".encode()]
    try:
        # found as soon as it is on the disk; a failure only after the bound has passed
        wait_for(lambda: on_disk(image, needles) == needles or time.monotonic() - sent > SYNC_INTERVAL + 1,
                 30, "the packet and the kernel line on the disk")
        assert on_disk(image, needles) == needles, "not on the disk sync_interval + 1 s after"
        assert proc.poll() is None  # still armed: nothing stopped or warned the run
    finally:
        proc.terminate()
        code, out, err = finish(proc)
    assert code == 0, err


def test_syncer_syncs_changed_files_only_and_survives_a_broken_source(tmp_path):
    stream = tmp_path / "stream.log"
    stream.write_bytes(b"one\n")

    def broken():
        raise RuntimeError("plugin bug")

    syncer = StreamSyncer([("broken", broken), ("ok", lambda: [stream, tmp_path / "missing"])], 1.0)
    syncer.sync_once()
    assert (syncer.stats.files_synced, syncer.stats.dirs_synced) == (1, 1)
    syncer.sync_once()  # unchanged: nothing to sync
    assert syncer.stats.files_synced == 1
    with open(stream, "ab") as f:
        f.write(b"two\n")
    syncer.sync_once()
    assert (syncer.stats.files_synced, syncer.stats.dirs_synced) == (2, 1)
    os.replace(stream, tmp_path / "old.log")  # a rotation: a new file at the same path
    stream.write_bytes(b"three\n")
    syncer.sync_once()
    assert (syncer.stats.files_synced, syncer.stats.dirs_synced) == (3, 2)
    assert syncer.stats.errors == 0
