"""Reading an archive back: its manifest (first member, read without unpacking the rest),
its member list, and the human report shown by ``scoutfs-collect inspect ARCHIVE`` (its
text with every control character shown as ``\\xHH``: a trigger's reason is a kernel line,
and none reaches the terminal raw)."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import shutil
import signal
import subprocess
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple

from scoutfs_collect.archive.tarstream import TarStream
from scoutfs_collect.system.kernel_text import escape_controls
from scoutfs_collect.ui.console import human_bytes

try:
    import lzma
    lzma_error: type = lzma.LZMAError
except ImportError:  # a Python built without liblzma
    lzma = None  # type: ignore[assignment]
    lzma_error = OSError

WIDTH = 100
MANIFEST_MAX = 64 << 20
GROUP_ABOVE = 8  # a plugin subdirectory with more files shows its small ones as one line
BIG = 64 << 10
_MAGIC = {b"\x28\xb5\x2f\xfd": "zstd", b"\xfd7zXZ\x00": "xz", b"\x1f\x8b": "gz"}


def _compression(archive: Path) -> Optional[str]:
    with open(archive, "rb") as f:
        head = f.read(8)
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


@contextlib.contextmanager
def _open_stream(archive: Path) -> Iterator[TarStream]:
    """A :class:`TarStream` over the archive; decompressor ended on exit."""
    archive = Path(archive)
    try:
        comp = _compression(archive)
    except OSError as exc:
        raise ValueError(f"{archive}: cannot read: {exc.strerror or exc}") from None
    if comp != "zstd":
        try:
            with _python_decompressor(archive, comp) as f:
                yield TarStream(f, str(archive))
        except (tarfile.TarError, EOFError, OSError, lzma_error) as exc:
            raise ValueError(f"{archive}: not a scoutfs-collect archive ({exc})") from None
        return
    if shutil.which("zstd") is None:
        raise ValueError(f"{archive}: reading .tar.zst needs zstd: "
                         "dnf install zstd / apt-get install zstd")
    errors = tempfile.TemporaryFile()
    # A short-lived pipe, not a long-lived child: proc.py owns those.
    popen = subprocess.Popen(["zstd", "-dcq", "--", str(archive)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=errors, start_new_session=True)
    try:
        assert popen.stdout is not None
        _widen_pipe(popen.stdout.fileno())
        yield TarStream(popen.stdout, str(archive))
    except (tarfile.TarError, EOFError) as exc:
        errors.seek(0)
        why = errors.read(2000).decode(errors="replace").strip() or str(exc)
        raise ValueError(f"{archive}: not a scoutfs-collect archive ({why})") from None
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGKILL)
        popen.wait()
        assert popen.stdout is not None
        popen.stdout.close()
        errors.close()


F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; the name is in fcntl from 3.10


def _widen_pipe(fd: int) -> None:
    """A 1 MiB pipe from zstd instead of 64 KiB (the default): a quarter less CPU for
    the two processes together over a 1 GiB archive (fewer wake-ups and reads). Best
    effort: a pipe keeps its size where the kernel refuses (fs.pipe-max-size)."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass


def _python_decompressor(archive: Path, comp: Optional[str]) -> IO[bytes]:
    if comp == "gz":
        return gzip.open(archive, "rb")
    if comp == "xz":
        if lzma is None:
            raise OSError("reading .tar.xz needs Python's lzma module")
        return lzma.open(archive, "rb")
    return open(archive, "rb")


def open_stream(archive: Path):
    """A context manager giving a :class:`TarStream` over ``archive`` (zstd, xz, gz or
    plain): members in archive order, each readable once as a stream. Raises
    ValueError naming the archive when it is not a tar archive."""
    return _open_stream(archive)


def parse_manifest(archive: Path, member: tarfile.TarInfo, stream: Optional[IO[bytes]]) -> Dict[str, Any]:
    """The manifest in ``member`` of ``archive`` (its data ``stream``), checked: at most
    MANIFEST_MAX bytes, JSON, an object with ``format``. Raises ValueError naming both."""
    if member.size > MANIFEST_MAX:
        raise ValueError(f"{archive}: {member.name} is too large ({member.size} bytes)")
    try:
        manifest = json.loads(stream.read() if stream is not None else b"")
    except ValueError as exc:
        raise ValueError(f"{archive}: {member.name} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or "format" not in manifest:
        raise ValueError(f"{archive}: {member.name} is not a scoutfs-collect manifest")
    return manifest


def is_manifest(member: tarfile.TarInfo) -> bool:
    """Whether ``member`` is ``TOP/manifest.json``."""
    parts = member.name.strip("/").split("/")
    return len(parts) == 2 and parts[1] == "manifest.json" and member.isfile()


def read_manifest(archive: Path) -> Dict[str, Any]:
    """The parsed ``TOP/manifest.json``; stops reading as soon as it is found (it is first).

    Raises ValueError naming the archive when it is not a scoutfs-collect archive.
    """
    with _open_stream(archive) as tar:
        for member in tar:
            if is_manifest(member):
                return parse_manifest(archive, member, tar.extractfile(member))
    raise ValueError(f"{archive}: not a scoutfs-collect archive (no TOP/manifest.json)")


def list_members(archive: Path) -> List[Tuple[str, int]]:
    """``(name, size)`` of every member, in archive order (reads the whole stream)."""
    with _open_stream(archive) as tar:
        return [(m.name, m.size) for m in tar]


# ---------------------------------------------------------------- rendering


def human_size(n: Optional[float]) -> str:
    """``1.5 MiB`` style; ``?`` for unknown."""
    return "?" if n is None else human_bytes(n)


def _num(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _stamp(t: Any, convert, fmt: str, suffix: str) -> str:
    t = _num(t)
    if t is None:
        return "-"
    secs, ms = divmod(int(round(t * 1000)), 1000)
    tm = convert(secs)
    return time.strftime(fmt, tm) + f".{ms:03d}" + time.strftime(suffix, tm)


def utc(t: Any) -> str:
    """Epoch seconds as ``2024-05-01T12:00:00.123Z``; ``-`` when unknown."""
    return _stamp(t, time.gmtime, "%Y-%m-%dT%H:%M:%S", "Z")


def local(t: Any) -> str:
    """Epoch seconds as local time with its zone name; ``-`` when unknown."""
    return _stamp(t, time.localtime, "%Y-%m-%d %H:%M:%S", " %Z")


def _seconds(s: Any) -> str:
    s = _num(s)
    return "-" if s is None else (f"{s:.3f} s" if abs(s) < 100 else f"{s:.1f} s")


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _wrap(text: str, indent: str, more: Optional[str] = None) -> List[str]:
    """``text`` wrapped to WIDTH, each of its lines a paragraph with its control characters
    escaped first (a tab as ``\\x09``, as the timeline shows it, not wrapped away into
    spaces); continuation lines indented by ``more``."""
    more = indent + "  " if more is None else more
    lines: List[str] = []
    for para in [escape_controls(p) for p in str(text).rstrip("\n").split("\n")]:
        lines += textwrap.wrap(para, WIDTH, initial_indent=indent, subsequent_indent=more,
                               break_long_words=True, break_on_hyphens=False) or [indent]
    return lines


def _field(label: str, value: Any) -> List[str]:
    return _wrap(f"{label:<10}{value}", "", " " * 10)


def _d(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _header(m: Dict[str, Any]) -> List[str]:
    tool, host, target, profile = (_d(m.get(k)) for k in ("tool", "host", "target", "profile"))
    out = [f"scoutfs-collect archive (manifest format {m.get('format', '?')})", ""]
    out += _field("Host", f"{host.get('hostname', '?')}  kernel {host.get('kernel', '?')}")
    out += _field("Target", f"{target.get('ip', '?')}:{target.get('port', '?')}")
    out += _field("Profile", profile.get("name", "?"))
    out += _field("Tool", f"{tool.get('name', 'scoutfs-collect')} {tool.get('version', '?')}")
    argv = m.get("argv")
    if isinstance(argv, list):
        out += _field("Command", " ".join(str(a) for a in argv))
    result = _d(m.get("result"))
    status = result.get("exit_status", "? (run did not finish)")
    out += _field("Result", f"exit status {status}")
    if result.get("complete") is False:
        out += _wrap(f"INCOMPLETE run, packed by {result.get('packed_by', '?')} at "
                     f"{utc(result.get('packed_at'))}", " " * 10)
    for key in ("problems", "notes"):
        for item in result.get(key) or []:
            out += _wrap(f"{key[:-1]}: {item}", " " * 10)
    return out


def _trigger(m: Dict[str, Any]) -> List[str]:
    trig = m.get("trigger")
    if not isinstance(trig, dict):
        return ["", "Trigger   none fired (stopped by the user, interrupted, or still waiting)"]
    t = trig.get("time")
    out = ["", *_field("Trigger", f"{trig.get('name', '?')} (type {trig.get('type', '?')})")]
    out += _wrap(f"reason: {trig.get('reason', '?')}", " " * 10)
    out += [f"{'':10}at {utc(t)} UTC  ({local(t)} local)"]
    return out


def _times(m: Dict[str, Any]) -> List[str]:
    times = _d(m.get("times"))
    started = _num(times.get("started"))
    out = ["", "Times (UTC)"]
    for key in ("started", "armed", "triggered", "stopped", "finished"):
        t = _num(times.get(key))
        rel = f"  +{t - started:.3f} s" if t is not None and started is not None else ""
        out.append(f"  {key:<10}{utc(t)}{rel}")
    for key, value in sorted(_d(times.get("clocks")).items()):
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.6f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in value.items())
        out += _wrap(f"clocks at {key}: {value}", "  ", "    ")
    return out


def _window(window: Any, trigger_time: Optional[float]) -> List[str]:
    w = _d(window)
    first, last = _num(w.get("first")), _num(w.get("last"))
    if first is None and last is None:
        return ["window: none recorded"]
    text = f"window: {utc(first)} .. {utc(last)}"
    if first is not None and last is not None:
        text += f" ({_seconds(last - first)})"
    if trigger_time is None:
        return [text]
    rel = [f"{_seconds(abs(trigger_time - x))} {'before' if x <= trigger_time else 'after'}"
           for x in (first, last) if x is not None]
    return [text, f"        {' .. '.join(rel)} the trigger"]


def _plugins(m: Dict[str, Any]) -> List[str]:
    plugins = _d(m.get("plugins"))
    trig = m.get("trigger")
    trigger_time = _num(trig.get("time")) if isinstance(trig, dict) else None
    out = ["", f"Plugins ({len(plugins)})"]
    if not plugins:
        out.append("  none recorded")
    for name in sorted(plugins):
        p = _d(plugins[name])
        files = [f for f in p.get("files") or [] if isinstance(f, dict)]
        size = sum(_num(f.get("size")) or 0 for f in files)
        status = str(p.get("status", "?")).upper() if p.get("status") != "ok" else "ok"
        out.append(f"  {name:<18} {status:<8} {p.get('kind', '?')}/{p.get('type', '?')}"
                   f"  {_count(len(files), 'file')}, {human_size(size)}")
        if p.get("error"):
            out += _wrap(f"error: {p['error']}", " " * 6)
        phases = _d(p.get("phases"))
        if phases:
            out += _wrap("phases: " + ", ".join(f"{k} {_seconds(v)}" for k, v in phases.items()),
                         " " * 6)
        if p.get("stopped_at") is not None:
            out.append(f"      stopped at {utc(p.get('stopped_at'))}")
        if p.get("kind", "collector") != "trigger" or p.get("window"):
            out += [" " * 6 + line for line in _window(p.get("window"), trigger_time)]
    return out


def _files(m: Dict[str, Any]) -> List[str]:
    rows = []
    for name, p in sorted(_d(m.get("plugins")).items()):
        for f in _d(p).get("files") or []:
            if isinstance(f, dict):
                rows.append((f"{name}/{f.get('path', '?')}", _num(f.get("size"))))
    out = ["", f"Files ({_count(len(rows), 'file')}, {human_size(sum(s or 0 for _, s in rows))})"]
    groups: Dict[str, List[float]] = {}  # plugin/subdir -> sizes of its small files
    for path, size in rows:
        groups.setdefault(_group(path), []).append(size or 0)
    folded: Dict[str, Tuple[int, List[float]]] = {}  # group -> (its line's index, sizes)
    for path, size in rows:
        group = _group(path)
        if group and len(groups[group]) > GROUP_ABOVE and (size or 0) < BIG:
            folded.setdefault(group, (len(out), []))[1].append(size or 0)
            if len(folded[group][1]) == 1:
                out.append("")  # filled in below, where the group's first small file was
            continue
        out.append(_file_line(path, size))
    for group, (index, sizes) in folded.items():
        out[index] = _file_line(f"{group}/... ({len(sizes)} small files)", sum(sizes))
    return out


def _group(path: str) -> str:
    """``plugin/subdir`` for a file in a plugin's subdirectory, else ``""``."""
    parts = path.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else ""


def _file_line(path: str, size: Optional[float]) -> str:
    if len(path) > WIDTH - 16:
        path = "..." + path[-(WIDTH - 19):]
    return f"  {path:<{WIDTH - 16}}{human_size(size):>12}"


def render(manifest: Dict[str, Any]) -> str:
    """The human report for ``scoutfs-collect inspect``; tolerant of partial manifests."""
    m = _d(manifest)
    lines = _header(m) + _trigger(m) + _times(m) + _plugins(m) + _files(m)
    return "\n".join(escape_controls(line.rstrip()) for line in lines) + "\n"
