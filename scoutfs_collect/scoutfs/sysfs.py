"""Reading the scoutfs sysfs tree: mounts, counters, options and fence requests.

The scoutfs kernel module publishes, while it is loaded, ``/sys/fs/scoutfs/`` and in it
one directory per *mounted* filesystem, ``f.XXXXXX.r.YYYYYY`` (prefixes of the fsid and
of the mount's rid)::

    fsid  rid  format_version  data_device_maj_min
    counters/<name>          one decimal number per file
    fence/<rid>/             a pending fence request (only on the quorum leader)
    quorum/status  quorum/is_leader  mount_options/*  volume_options/*  srch/*

Everything here tolerates the tree changing under it: a mount that is unmounted
mid-read, a counter file that vanishes, a value that is not a number. Such things are
returned as data (``MountState.error``, ``CounterValues.problems``), never raised.
Names starting with a dot are ignored (sysfs never makes them; the test fixture uses
them for its temporary files). The set of counters is never assumed: every read lists
the directory again.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from scoutfs_collect.plugin.api import Problem

DEFAULT_ROOT = "/sys/fs/scoutfs"
_MOUNT_RE = re.compile(r"^f\.[0-9a-fA-F]+\.r\.[0-9a-fA-F]+$")
_READ_CHUNK = 65536

PathLike = Union[str, Path]


def list_mounts(root: PathLike) -> List[str]:
    """Names of the mount directories under ``root``, sorted; [] if root is missing."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return sorted(n for n in names if _MOUNT_RE.match(n))


def root_problems(root: PathLike, mounts_required: bool = True) -> List[Problem]:
    """The preflight problems every scoutfs sysfs plugin shares: the module is not
    loaded (fatal) or no filesystem is mounted (fatal unless ``mounts_required`` is
    False, for watchers that also watch mounts appearing later)."""
    if not os.path.isdir(root):
        return [
            Problem(
                f"scoutfs kernel module not loaded: {root} does not exist",
                "load it (modprobe scoutfs; install the scoutfs kmod package if it is "
                "missing) or set sysfs_root to where the scoutfs sysfs tree is",
            )
        ]
    if not list_mounts(root):
        later = "" if mounts_required else " yet (mounts that appear later are watched)"
        return [
            Problem(
                f"no scoutfs filesystem mounted{later}: no f.*.r.* directory in {root}",
                "mount the scoutfs filesystem first (mount -t scoutfs ...)",
                fatal=mounts_required,
            )
        ]
    return []


def _entries(directory: PathLike) -> List[str]:
    """Visible names in ``directory``; raises FileNotFoundError when it is gone."""
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


def read_text(path: PathLike) -> str:
    """The whole content of one small (sysfs) file, trailing newlines removed."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace").rstrip("\n")


def read_optional(path: PathLike) -> Optional[str]:
    """Like :func:`read_text`, None when the file is missing or unreadable."""
    try:
        return read_text(path).strip()
    except OSError:
        return None


def read_values(directory: PathLike) -> Dict[str, str]:
    """name -> text of every file in ``directory`` ({} if it is missing; unreadable
    files get ``<error: ...>`` as value)."""
    out: Dict[str, str] = {}
    try:
        names = _entries(directory)
    except OSError:
        return out
    for name in names:
        path = os.path.join(directory, name)
        try:
            out[name] = read_text(path)
        except IsADirectoryError:
            continue
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                continue
            out[name] = f"<error: {exc.strerror}>"
    return out


@dataclasses.dataclass
class CounterValues:
    """One read of a ``counters/`` directory.

    ``problems`` maps counter names that could not be used to why: ``vanished``
    (listed, then gone before it was read), ``not a number: '...'`` or a read error.
    ``missing`` is True when the directory itself was gone (mount vanished).
    """

    values: Dict[str, int] = dataclasses.field(default_factory=dict)
    problems: Dict[str, str] = dataclasses.field(default_factory=dict)
    missing: bool = False


def parse_counter(text: str) -> Optional[int]:
    """The integer in a counter file, None if it is not a decimal number."""
    text = text.strip()
    try:
        return int(text, 10)
    except ValueError:
        return None


VANISHED = "vanished"


def read_counter(path: PathLike) -> Tuple[Optional[int], Optional[str]]:
    """``(value, None)`` for one counter file, or ``(None, why)``: :data:`VANISHED`
    (the file is gone), ``read error: ...`` or ``not a number: '...'``."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        return None, VANISHED
    except OSError as exc:
        return None, f"read error: {exc.strerror}"
    value = parse_counter(text)
    if value is None:
        text = text.strip()
        shown = text if len(text) <= 40 else text[:37] + "..."
        return None, f"not a number: {shown!r}"
    return value, None


def read_counters(mount_dir: PathLike) -> CounterValues:
    """Read every file in ``MOUNT/counters``; see :class:`CounterValues`."""
    out = CounterValues()
    counters_dir = os.path.join(mount_dir, "counters")
    try:
        names = _entries(counters_dir)
    except OSError:
        out.missing = True
        return out
    for name in names:
        value, why = read_counter(os.path.join(counters_dir, name))
        if why is None:
            out.values[name] = value
        else:
            out.problems[name] = why
    return out


@dataclasses.dataclass(frozen=True)
class FenceRequest:
    """One ``fence/<rid>/`` directory: the quorum leader asks for a mount to be fenced."""

    mount: str
    rid: str
    ipv4_addr: str = "?"
    reason: str = "?"
    elapsed_secs: str = "?"
    fenced: str = "?"
    error: str = "?"

    def describe(self) -> str:
        return (
            f"fence request for rid {self.rid} (ipv4 {self.ipv4_addr}, reason {self.reason}) on {self.mount}"
        )

    def as_dict(self) -> Dict[str, str]:
        return dataclasses.asdict(self)


def list_fence_requests(mount_dir: PathLike) -> List[str]:
    """Names (rids) of the pending fence request directories of one mount ([] if none)."""
    try:
        return _entries(os.path.join(mount_dir, "fence"))
    except OSError:
        return []


def read_fence_request(mount_dir: PathLike, rid: str) -> FenceRequest:
    """The attributes of one fence request ('?' for any that cannot be read)."""
    req_dir = os.path.join(mount_dir, "fence", rid)
    fields = {}
    for name in ("ipv4_addr", "reason", "elapsed_secs", "fenced", "error"):
        value = read_optional(os.path.join(req_dir, name))
        fields[name] = value if value else "?"
    return FenceRequest(mount=os.path.basename(str(mount_dir).rstrip("/")), rid=rid, **fields)


@dataclasses.dataclass
class MountState:
    """Everything read from one mount directory at one moment."""

    name: str
    fsid: Optional[str] = None
    rid: Optional[str] = None
    format_version: Optional[str] = None
    data_device_maj_min: Optional[str] = None
    counters: CounterValues = dataclasses.field(default_factory=CounterValues)
    quorum: Dict[str, str] = dataclasses.field(default_factory=dict)
    mount_options: Dict[str, str] = dataclasses.field(default_factory=dict)
    volume_options: Dict[str, str] = dataclasses.field(default_factory=dict)
    fence: Dict[str, FenceRequest] = dataclasses.field(default_factory=dict)
    #: Set when the mount directory vanished while it was read (unmounted).
    error: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        return {
            "fsid": self.fsid,
            "rid": self.rid,
            "format_version": self.format_version,
            "data_device_maj_min": self.data_device_maj_min,
            "error": self.error,
            "quorum": self.quorum,
            "mount_options": self.mount_options,
            "volume_options": self.volume_options,
            "fence_requests": {rid: req.as_dict() for rid, req in self.fence.items()},
            "counter_problems": self.counters.problems,
            "counters": self.counters.values,
        }


def read_mount(root: PathLike, name: str, volume_options: bool = True) -> MountState:
    """Read one mount directory completely (counters, ids, quorum, options, fence).

    ``volume_options=False`` skips ``volume_options/*``: reading one asks the server
    (kmod/src/volopt.c: scoutfs_client_get_volopt), so on a mount whose server does not
    answer (the node about to be fenced) the read blocks until the connection is back."""
    mount_dir = os.path.join(root, name)
    state = MountState(name=name)
    state.fsid = read_optional(os.path.join(mount_dir, "fsid"))
    state.rid = read_optional(os.path.join(mount_dir, "rid"))
    state.format_version = read_optional(os.path.join(mount_dir, "format_version"))
    state.data_device_maj_min = read_optional(os.path.join(mount_dir, "data_device_maj_min"))
    state.counters = read_counters(mount_dir)
    state.quorum = read_values(os.path.join(mount_dir, "quorum"))
    state.mount_options = read_values(os.path.join(mount_dir, "mount_options"))
    if volume_options:
        state.volume_options = read_values(os.path.join(mount_dir, "volume_options"))
    for rid in list_fence_requests(mount_dir):
        state.fence[rid] = read_fence_request(mount_dir, rid)
    if not os.path.isdir(mount_dir):
        state.error = "mount directory vanished while it was read (unmounted?)"
    elif state.counters.missing:
        state.error = "no counters directory"
    return state


@dataclasses.dataclass
class Snapshot:
    """All mounts under one root, read at ``time`` (epoch s) in ``read_seconds``."""

    root: str
    time: float
    read_seconds: float
    mounts: Dict[str, MountState]

    def as_dict(self) -> Dict[str, Any]:
        return {
            "root": self.root,
            "time": round(self.time, 6),
            "utc": utc_text(self.time),
            "read_seconds": round(self.read_seconds, 6),
            "mounts": {name: m.as_dict() for name, m in self.mounts.items()},
        }


def snapshot(root: PathLike, volume_options: bool = True) -> Snapshot:
    """Read every mount under ``root`` (an empty snapshot if root is missing);
    ``volume_options``: as :func:`read_mount`."""
    started = time.time()
    t0 = time.perf_counter()
    mounts = {name: read_mount(root, name, volume_options) for name in list_mounts(root)}
    return Snapshot(str(root), started, time.perf_counter() - t0, mounts)


def read_all_counters(root: PathLike) -> Dict[str, CounterValues]:
    """mount name -> counters, for every mount under ``root`` (cheaper than snapshot)."""
    return {name: read_counters(os.path.join(root, name)) for name in list_mounts(root)}


def utc_text(epoch: float) -> str:
    """``YYYY-MM-DD HH:MM:SS.mmm`` in UTC: readable, and parsed by spreadsheets."""
    whole = int(epoch)
    millis = int(round((epoch - whole) * 1000))
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole)) + f".{millis:03d}"
