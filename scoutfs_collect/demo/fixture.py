"""A fake scoutfs sysfs tree in an ordinary directory, for tests and for the demo.

The scoutfs kernel module cannot be loaded on a test or demo machine, so this builds a
directory with the same layout as ``/sys/fs/scoutfs`` (see
:mod:`scoutfs_collect.scoutfs.sysfs`). The layout follows the public scoutfs sources;
the *values* (options, quorum status text) are plausible, not authoritative.

Every change is atomic, so a concurrent reader never sees half a value, half a fence
request or half a mount: files are written to a temporary name under
``ROOT/.fixture-tmp/`` and renamed into place; fence requests and mounts are built
there completely and then renamed into the tree.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from scoutfs_collect.scoutfs.sysfs import list_mounts

PathLike = Union[str, Path]
COUNTER_NAMES_FILE = "scoutfs-counter-names.txt"
TMP_DIR = ".fixture-tmp"

_bump_lock = threading.Lock()

MOUNT_OPTIONS: Dict[str, str] = {
    "data_prealloc_blocks": "2048",
    "data_prealloc_contig_only": "1",
    "log_merge_wait_timeout_ms": "500",
    "orphan_scan_delay_ms": "10000",
    "quorum_heartbeat_timeout_ms": "10000",
}
VOLUME_OPTIONS: Dict[str, str] = {"data_alloc_zone_blocks": "0"}


def _counter_names(text: str) -> List[str]:
    """One name per line; blank lines and # comments skipped."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def load_counter_names(path: PathLike) -> List[str]:
    """Counter names from a file, one per line (blank lines and # comments skipped)."""
    return _counter_names(Path(path).read_text())


def default_counter_names() -> List[str]:
    """The 203 counter names of the current scoutfs sources (packaged copy)."""
    res = importlib.resources.files("scoutfs_collect") / "data" / COUNTER_NAMES_FILE
    return _counter_names(res.read_text())


def _tmp_path(root: Path) -> Path:
    tmp = root / TMP_DIR
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp / uuid.uuid4().hex


def write_value(path: PathLike, text: str) -> None:
    """Atomically replace the file ``path`` (in a mount directory) with ``text``."""
    path = Path(path)
    root = _root_of(path)
    tmp = _tmp_path(root)
    tmp.write_text(text)
    os.replace(tmp, path)


def _root_of(path: Path) -> Path:
    """The fixture root above ``path`` (the parent of its ``f.*.r.*`` directory)."""
    for parent in path.parents:
        if parent.name.startswith("f.") and ".r." in parent.name:
            return parent.parent
    return path.parent


def _write_files(directory: Path, values: Dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in values.items():
        (directory / name).write_text(text)


def _hex16() -> str:
    return os.urandom(8).hex()


def build(root: PathLike, mounts: int = 1, counter_names: Optional[Sequence[str]] = None) -> List[Path]:
    """Create ``mounts`` mount directories under ``root`` (made if missing); return them.

    All mounts of one call share one fsid (the same filesystem mounted several times,
    as scoutfs' own test suite does); the first is the quorum leader. Counters start
    at 0. ``counter_names`` defaults to :func:`default_counter_names`.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = list(counter_names) if counter_names is not None else default_counter_names()
    fsid = _hex16()
    made = []
    for index in range(mounts):
        rid = _hex16()
        name = f"f.{fsid[:6]}.r.{rid[:6]}"
        while name in list_mounts(root):
            rid = _hex16()
            name = f"f.{fsid[:6]}.r.{rid[:6]}"
        staging = _tmp_path(root)
        staging.mkdir()
        _write_files(
            staging,
            {
                "fsid": f"{fsid}\n",
                "rid": f"{rid}\n",
                "format_version": "2\n",
                "data_device_maj_min": f"253:{16 + index}\n",
            },
        )
        _write_files(staging / "counters", {n: "0\n" for n in names})
        (staging / "fence").mkdir()
        leader = index == 0
        status = (
            f"quorum_slot_nr {index}\nterm 1\nrole {'leader' if leader else 'follower'}\n"
            f"vote_for_rid {rid if leader else '0' * 16}\n"
        )
        _write_files(staging / "quorum", {"status": status, "is_leader": "1" if leader else "0"})
        options = dict(MOUNT_OPTIONS, quorum_slot_nr=str(index), metadev_path="/dev/vdb")
        _write_files(staging / "mount_options", {k: v + "\n" for k, v in options.items()})
        _write_files(staging / "volume_options", {k: v + "\n" for k, v in VOLUME_OPTIONS.items()})
        _write_files(staging / "srch", {"compact_delay_ms": "10000\n"})
        os.rename(staging, root / name)
        made.append(root / name)
    return made


def bump(mount_dir: PathLike, name: str, by: int = 1) -> int:
    """Add ``by`` to counter ``name`` (created at 0 if missing); return the new value."""
    path = Path(mount_dir) / "counters" / name
    with _bump_lock:
        try:
            old = int(path.read_text().strip() or 0)
        except FileNotFoundError:
            old = 0
        new = old + by
        write_value(path, f"{new}\n")
    return new


def set_counter(mount_dir: PathLike, name: str, text: str) -> None:
    """Write raw ``text`` into counter ``name`` (e.g. a non-numeric value for tests)."""
    with _bump_lock:
        write_value(Path(mount_dir) / "counters" / name, text)


def remove_counter(mount_dir: PathLike, name: str) -> None:
    """Delete counter ``name`` (as an older or newer module would not have it)."""
    with _bump_lock:
        try:
            os.unlink(Path(mount_dir) / "counters" / name)
        except FileNotFoundError:
            pass


def add_fence_request(mount_dir: PathLike, rid: str, ipv4: str, reason: str = "client_reconnect") -> Path:
    """Publish a pending fence request ``fence/<rid>/`` at once, complete; return it."""
    mount_dir = Path(mount_dir)
    staging = _tmp_path(mount_dir.parent)
    staging.mkdir()
    # Real attributes carry no trailing newline (fence.c uses snprintf "%u"/"%s").
    _write_files(
        staging,
        {
            "elapsed_secs": "0",
            "fenced": "0",
            "error": "0",
            "ipv4_addr": ipv4,
            "reason": reason,
            "rid": rid,
        },
    )
    target = mount_dir / "fence" / rid
    (mount_dir / "fence").mkdir(exist_ok=True)
    os.rename(staging, target)
    return target


def remove_fence_request(mount_dir: PathLike, rid: str) -> None:
    """The request was served (or the server stopped): its directory goes away."""
    _remove_tree(Path(mount_dir) / "fence" / rid, Path(mount_dir).parent)


def remove_mount(mount_dir: PathLike) -> None:
    """Unmount: the mount directory disappears at once (renamed away, then deleted)."""
    mount_dir = Path(mount_dir)
    _remove_tree(mount_dir, mount_dir.parent)


def _remove_tree(path: Path, root: Path) -> None:
    graveyard = _tmp_path(root)
    try:
        os.rename(path, graveyard)
    except FileNotFoundError:
        return
    shutil.rmtree(graveyard, ignore_errors=True)


def remove_tree(root: PathLike) -> None:
    """Delete a whole fixture root; a missing one is fine."""
    shutil.rmtree(root, ignore_errors=True)
