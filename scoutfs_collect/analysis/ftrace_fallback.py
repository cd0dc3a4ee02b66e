"""Ftrace events of an archive whose ftrace directory has no ``trace.txt``: a node powered
off mid-finalize, or a text trace that failed, still leaves ``trace.dat`` or the raw
per-CPU ring pages with their headers (``raw/``). Their events are read with the
analyst's own trace-cmd (``trace-cmd report``; from raw pages a trace.dat is first rebuilt
with ``trace-cmd restore`` from the saved headers, :mod:`scoutfs_collect.system.tracecmd`),
which only ever reads those files, and go through the same reader and clock offset as
trace.txt (:func:`.sources.ftrace_records`).

Streaming: the archive's members come in the order its directories were walked (sorted:
``raw/...``, ``trace.dat``, ``trace.txt``), so trace.txt arrives last. The manifest comes
first and lists each plugin's files as they were on disk when packed (the runner and
``scoutfs-collect pack`` both list them), so the plan is made before the members arrive:
only when the manifest lists no trace.txt is one form copied to the analysis temporary
directory while the stream passes (trace.dat if listed, else raw/). Should the archive
disagree with its manifest (trace.txt listed but absent, or trace.dat unreadable), the
members that were seen are copied in one more streaming pass over the archive.

A trace.txt the collector did not record as finished (the manifest of a run that ended
mid-finalize, completed by ``scoutfs-collect pack``) may be cut short. When trace.dat is
listed too, it is read instead (the raw pages and trace.dat are written before a text
made from trace.dat, so they are complete whenever trace.dat exists), and trace.txt is
kept aside as the last resort.

Disk: nothing is copied when the archive has a finished trace.txt. Otherwise, per ftrace
source, one form at a time: trace.dat, or raw/ plus the trace.dat rebuilt from it (the
raw pages are removed once it is built), about the ring's size (buffer_size_kb x CPUs)
twice at most, plus an unfinished trace.txt; each copy must leave SPARE free; all are
removed when the node's scan ends. Memory stays flat: members are copied and trace-cmd's
output read in chunks.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set

from scoutfs_collect.analysis import sources, spool
from scoutfs_collect.archive import read as archive_read
from scoutfs_collect.system import tracecmd, tracefs

if TYPE_CHECKING:  # scan imports this module
    from scoutfs_collect.analysis.scan import NodeScan, Window

TEXT, DAT, RAW, NONE = "trace.txt", "trace.dat", "raw", "none"
INSTALL = "dnf install trace-cmd / apt-get install trace-cmd"
FINISHED_TEXT = ("tracefs", "trace-cmd report")  # details.trace_txt once the text is complete
CHUNK = 1 << 20
CUT_SHORT = "trace.txt may be cut short: the run ended before the collector finished it"
SPARE = 256 << 20  # free space a copy must leave in the temporary directory


@dataclasses.dataclass
class Origin:
    """Where one ftrace source's events come from: ``form`` is ``trace.txt``, ``trace.dat``,
    ``raw`` (the ring pages) or ``none``; ``note`` one line for a person ("" for trace.txt)."""

    form: str
    note: str = ""


@dataclasses.dataclass
class Holdings:
    """What the manifest lists in one ftrace plugin directory (files of more than 0 bytes);
    ``listed`` False when it lists no files at all (it cannot tell)."""

    listed: bool = False
    text: bool = False
    dat: bool = False
    raw: bool = False
    text_finished: bool = False  # the collector recorded the text as complete


def form_of(rel: Sequence[str]) -> Optional[str]:
    """The form a path below the plugin directory belongs to (None: none of them)."""
    if list(rel) in ([TEXT], [DAT]):
        return rel[0]
    if len(rel) >= 2 and rel[0] == RAW and all(p not in ("", ".", "..") for p in rel):
        return RAW
    return None


def holdings(plugin: Any) -> Holdings:
    """The :class:`Holdings` of one manifest plugin record (any shape: never raises)."""
    plugin = plugin if isinstance(plugin, dict) else {}
    files = plugin.get("files") if isinstance(plugin.get("files"), list) else []
    det = plugin.get("details") if isinstance(plugin.get("details"), dict) else {}
    out = Holdings(listed=bool(files), text_finished=det.get("trace_txt") in FINISHED_TEXT)
    for f in files:
        path, size = (f.get("path"), f.get("size")) if isinstance(f, dict) else (None, None)
        if not isinstance(path, str) or not isinstance(size, int) or size <= 0:
            continue
        form = form_of(path.split("/"))
        if form == TEXT:
            out.text = True
        elif form == DAT:
            out.dat = True
        elif form == RAW and path.split("/")[1].startswith("cpu"):
            out.raw = True
    return out


def _from_dat_note(why: str = "the archive has no trace.txt") -> str:
    return f"ftrace events from trace.dat ({why})"


def _from_raw_note(why: str) -> str:
    return f"ftrace events from raw ring pages ({why})"


def planned_origin(plugin: Any) -> Origin:
    """Where an ftrace source's events would come from, by its manifest alone (``inspect``
    without a timeline)."""
    h = holdings(plugin)
    usable = tracefs.trace_cmd() is not None
    if not h.listed or (h.text and (h.text_finished or not h.dat or not usable)):
        return origin_of_text(h)
    need = "" if usable else f"; reading it needs trace-cmd ({INSTALL})"
    if h.dat:
        return Origin(DAT, _from_dat_note(CUT_SHORT if h.text else "the archive has no trace.txt") + need)
    if h.raw:
        return Origin(RAW, _from_raw_note("the archive has no trace.txt or trace.dat") + need)
    return Origin(NONE, "no ftrace events: the archive has no trace.txt, trace.dat or raw ring pages")


@dataclasses.dataclass
class _Dir:
    """One ftrace plugin directory of the archive, as the stream passes it."""

    spec: sources.SourceSpec
    holdings: Holdings
    index: int
    copy: Set[str] = dataclasses.field(default_factory=set)  # forms to copy while streaming
    seen: Set[str] = dataclasses.field(default_factory=set)  # forms met in the archive
    copied: Set[str] = dataclasses.field(default_factory=set)
    uncopyable: Set[str] = dataclasses.field(default_factory=set)
    text_bytes: int = 0
    reasons: List[str] = dataclasses.field(default_factory=list)  # why a form gave no events
    origin: Optional[Origin] = None


class Fallback:
    """The ftrace fallback of one archive's scan. :mod:`.scan` calls :meth:`take` with
    every member (it copies the ones the plan needs) and :meth:`finish` once the stream
    has ended (it spools the events of each ftrace source that had no trace.txt, and
    records each source's :class:`Origin` in ``NodeScan.ftrace_from``). ``copies`` False
    (the second reader of ``scan.scan_split``): the same members are kept from the scan,
    nothing is copied or read (the first reader does it)."""

    def __init__(self, archive: Path, manifest: Dict[str, Any], specs: Sequence[sources.SourceSpec],
                 spool_dir: Path, copies: bool = True) -> None:
        self.archive, self.spool_dir, self.copies = Path(archive), Path(spool_dir), copies
        self.tmp: Optional[Path] = None
        plugins = manifest.get("plugins") if isinstance(manifest.get("plugins"), dict) else {}
        self.dirs: Dict[str, _Dir] = {}
        usable = tracefs.trace_cmd() is not None
        for spec in specs:
            if spec.kind != "ftrace":
                continue
            d = self.dirs[spec.name] = _Dir(spec, holdings(plugins.get(spec.name)), len(self.dirs))
            h = d.holdings
            if usable and spec.offset is not None and h.listed and not h.text:
                d.copy = {DAT} if h.dat else {RAW} if h.raw else set()
            elif usable and spec.offset is not None and h.text and not h.text_finished and h.dat:
                d.copy = {DAT, TEXT}  # trace.dat first, the text perhaps cut short kept aside

    # --- while streaming --------------------------------------------------------------
    def take(self, parts: Sequence[str], member: tarfile.TarInfo, tar: tarfile.TarFile) -> bool:
        """Note ``member`` (path ``parts``: TOP, plugin, ...); True when it was copied here
        (the scan has nothing more to do with it)."""
        d = self.dirs.get(parts[1]) if len(parts) >= 3 else None
        form = form_of(parts[2:]) if d is not None and member.isfile() else None
        if d is None or form is None:
            return False
        if form == TEXT:
            d.text_bytes += member.size
        else:
            d.seen.add(form)
        if form not in d.copy or not self.copies:
            return form in d.copy
        self._copy(d, form, parts[2:], tar.extractfile(member), member.size)
        return form in d.copied  # else the scan reads it as usual (a trace.txt that could not be copied)

    def _root(self, d: _Dir) -> Path:
        if self.tmp is None:
            self.tmp = Path(tempfile.mkdtemp(prefix="ftrace-fallback.", dir=self.spool_dir.parent))
        root = self.tmp / str(d.index)
        root.mkdir(exist_ok=True)
        return root

    def _copy(self, d: _Dir, form: str, rel: Sequence[str], stream: Optional[IO[bytes]], size: int) -> None:
        """Copy one member below this source's temporary directory, unless that would leave
        less than SPARE free there (the other sources' spools share it)."""
        root = self._root(d)
        dest = root.joinpath(*rel)
        try:
            if shutil.disk_usage(root).free - size < SPARE:
                raise OSError(f"{size >> 20} MiB would leave less than {SPARE >> 20} MiB free")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as out:
                if stream is not None:
                    shutil.copyfileobj(stream, out, CHUNK)
            d.copied.add(form)
        except OSError as exc:
            d.copy.discard(form)
            d.copied.discard(form)
            d.uncopyable.add(form)
            d.reasons.append(f"{form}: cannot copy it to {dest.parent}: {exc.strerror or exc}")

    # --- once the stream has ended ----------------------------------------------------
    def finish(self, result: NodeScan, window: Window, density: bool) -> None:
        """Spool the events of every ftrace source that had no (finished) trace.txt
        (``density``: count them into the report's density buckets too); record where each
        source's events came from in ``result.ftrace_from``."""
        if not self.copies:
            return
        try:
            pending = []
            for name, d in self.dirs.items():
                if d.text_bytes and TEXT not in d.copied:
                    result.ftrace_from[name] = origin_of_text(d.holdings)
                else:
                    pending.append(d)
            tool = tracefs.trace_cmd() is not None
            for d in [] if tool else pending:
                d.origin = None if TEXT in d.copied else Origin(NONE, _without_trace_cmd(d))
            for form in (DAT, RAW) if tool else ():
                fetch = [d for d in pending if d.origin is None and form in d.seen and d.spec.offset
                         is not None and form not in d.copied | d.uncopyable]
                if fetch:
                    self._second_pass(fetch, form)
                for d in pending:
                    if d.origin is None and form in d.copied:
                        self._read(d, form, result, window, density)
            for d in pending:
                if d.origin is None and TEXT in d.copied:
                    self._read(d, TEXT, result, window, density)
                result.ftrace_from[d.spec.name] = d.origin or Origin(NONE, _nothing(d))
        finally:
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None

    def _second_pass(self, dirs: List[_Dir], form: str) -> None:
        """Copy ``form`` of each of ``dirs`` in one more pass over the archive (the archive
        disagreed with its manifest), stopping after the last of those directories."""
        by_name = {d.spec.name: d for d in dirs}
        for d in dirs:
            d.copy = {form}
        left, current = set(by_name), ""
        try:
            with archive_read.open_stream(self.archive) as tar:
                for member in tar:
                    parts = member.name.strip("/").split("/")
                    name = parts[1] if len(parts) >= 2 else ""
                    if current in left and name != current:
                        left.discard(current)
                        if not left:
                            break
                    current = name
                    if name in by_name:
                        self.take(parts, member, tar)
        except (ValueError, OSError, tarfile.TarError) as exc:
            for d in dirs:
                d.reasons.append(f"{form}: reading the archive again failed: {exc}")

    def _read(self, d: _Dir, form: str, result: NodeScan, window: Window, density: bool) -> None:
        root = self._root(d)
        no_text = CUT_SHORT if d.text_bytes else "the archive has no trace.txt"
        if form == TEXT:
            self._spool_text(d, root / TEXT, result, window, density)
            return
        if form == RAW:
            dat = self._rebuild(d, root)
            if dat is None:
                return
            why = "; ".join([no_text] + d.reasons) if d.reasons or d.text_bytes else \
                "the archive has no trace.txt or trace.dat"
            note = _from_raw_note(why)
            if not (root / RAW / "partial.dat").exists():
                note += "; function addresses unresolved (no kernel symbols)"
        else:
            dat, note = root / DAT, _from_dat_note(no_text)
        try:
            with tracecmd.Report(dat) as report:
                got = self._spool(d, report.lines, result, window, density)
        except OSError as exc:
            d.reasons.append(f"{form}: reading it failed: {exc.strerror or exc}")
            return
        finally:
            _remove(dat)
        if got == 0 and (report.returncode != 0 or (form == DAT and RAW in d.seen)):
            # a trace.dat cut short (power lost while it was written) reports no event, exit 0
            failed = f"failed: {report.error or report.returncode}" if report.returncode else "found no event"
            d.reasons.append(f"{form}: trace-cmd report {failed}")
            return
        if report.returncode != 0:
            note += f"; trace-cmd report stopped after {got} events: {report.error or report.returncode}"
        d.origin = Origin(form, note)

    def _spool_text(self, d: _Dir, text: Path, result: NodeScan, window: Window, density: bool) -> None:
        """The trace.txt kept aside, when neither trace.dat nor the raw pages gave events."""
        with open(text, "rb") as f:
            self._spool(d, f, result, window, density)
        d.origin = Origin(TEXT, "; ".join([CUT_SHORT] + d.reasons))

    def _spool(self, d: _Dir, lines: IO[bytes], result: NodeScan, window: Window, density: bool) -> int:
        """Spool the events of a text trace as ``scan.scan`` spools a member; how many."""
        stats = result.stats[d.spec.name]
        path = self.spool_dir / f"{len(os.listdir(self.spool_dir)):05d}.spool"
        text = result.text
        tag = f"\t{result.node}\t{d.spec.name}\t" if text is None else f"{stats.label:<{text.width}}"
        fmt = spool.LineFormat(window.start, window.end, window.ref, tag, text is not None, density)
        try:
            tally = spool.spool(sources.read(d.spec, lines, (window.start, window.end)), fmt, path)
        finally:
            if path.exists():
                result.spools.append((d.spec.name, path))
        stats.absorb(tally)
        return tally.count

    def _rebuild(self, d: _Dir, root: Path) -> Optional[Path]:
        """trace.dat from the copied raw pages and headers (their own partial.dat when the
        capture kept one, else one made from the saved formats)."""
        raw = root / RAW
        cpus = sorted((p for p in raw.glob("cpu*") if p.name[3:].isdigit()), key=lambda p: int(p.name[3:]))
        if not cpus:
            d.reasons.append("raw: no per-CPU ring pages in raw/")
            return None
        kept = raw / "partial.dat"
        partial = kept if kept.exists() else root / "partial.dat"
        dat = root / "rebuilt.dat"
        error = tracecmd.restore_trace_dat(cpus, dat, partial, headers=raw)
        for p in cpus:
            _remove(p)
        if error:
            d.reasons.append(f"raw: {error}")
            return None
        return dat


def origin_of_text(h: Holdings) -> Origin:
    """The origin of a source whose trace.txt is in the archive."""
    return Origin(TEXT, CUT_SHORT if h.listed and not h.text_finished else "")


def _without_trace_cmd(d: _Dir) -> str:
    have = [f for f in (DAT, RAW) if f in d.seen]
    if not have:
        return "no ftrace events: the archive has no trace.txt, trace.dat or raw ring pages"
    what = "trace.dat" if DAT in have else "the raw ring pages"
    return f"no ftrace events: the archive has no trace.txt, and reading {what} needs trace-cmd, " \
           f"which is not installed ({INSTALL})"


def _nothing(d: _Dir) -> str:
    if d.spec.offset is None:
        return "no ftrace events: the manifest has no trace clock offset to place them"
    if not d.reasons:
        return "no ftrace events: the archive has no trace.txt, trace.dat or raw ring pages"
    return "no ftrace events: the archive has no trace.txt; " + "; ".join(d.reasons)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
