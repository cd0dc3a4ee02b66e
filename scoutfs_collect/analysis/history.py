"""How much history each source really kept, read from the manifest: how far back before
the trigger it reaches, whether its ring wrapped (and lost older records), and a sizing
hint from the rate observed in this run -- what support tells the customer before the
next capture ("ftrace kept 3.1 s at 3.3 MiB/s; buffer_size_kb: 65536 keeps ~20 s")."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

from scoutfs_collect.analysis import ftrace_fallback
from scoutfs_collect.analysis.clocks import ClockMap
from scoutfs_collect.analysis.sources import KIND_OF_TYPE
from scoutfs_collect.system.kernel_text import escape_controls
from scoutfs_collect.ui.console import human_bytes

TARGET_SECONDS = 20.0  # the history a sizing hint aims for
MiB = 1 << 20


@dataclasses.dataclass
class SourceHistory:
    """One source's kept history. Times are aligned epoch seconds; ``reach_s`` is how far
    before the trigger its oldest record is; ``complete_s`` how far back it holds *every*
    record (less than reach when a ring wrapped: a busy CPU loses its oldest events first);
    ``wrapped`` None when the archive cannot tell."""

    node: str
    name: str
    kind: str
    first: Optional[float] = None
    last: Optional[float] = None
    reach_s: Optional[float] = None
    complete_s: Optional[float] = None
    wrapped: Optional[bool] = None
    lost: str = ""
    rate_bytes_s: Optional[float] = None
    hint: str = ""
    events_from: str = ""  # ftrace: trace.txt, trace.dat, raw (ring pages) or none
    events_note: str = ""  # ftrace: one line when the events are not (all) from trace.txt

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        """One line for ``inspect`` (and a line per note below it), control characters
        escaped (a note may quote trace-cmd's error)."""
        reach = "no records" if self.reach_s is None else f"reaches {_secs(self.reach_s)} before the trigger"
        wrap = {True: "WRAPPED", False: "not wrapped", None: "wrap unknown"}[self.wrapped]
        text = f"{self.kind:<9}{reach}; {wrap}"
        if self.lost:
            text += f" ({self.lost})"
        notes = [n for n in (self.events_note, self.hint) if n]
        return escape_controls(text) + "".join(f"\n           {escape_controls(n)}" for n in notes)


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _list(v: Any) -> List[Any]:
    return v if isinstance(v, list) else []


def _ring_index(name: str) -> int:
    digits = name[len("tcpdump.pcap"):]
    return int(digits) if digits.isdigit() else -1


def _secs(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s:.1f} s" if s >= 10 else f"{s:.3f} s"


def _rate(r: float) -> str:
    return f"{human_bytes(r)}/s"


def of_manifest(manifest: Dict[str, Any], ref: Optional[float], clocks: ClockMap, node: str = "",
                ftrace_from: Optional[Dict[str, ftrace_fallback.Origin]] = None) -> List[SourceHistory]:
    """The history of every timeline source of one archive; ``ref`` the aligned trigger;
    ``ftrace_from``: where a scan read each ftrace source's events (else the manifest says)."""
    out = []
    plugins = manifest.get("plugins")
    for name, p in sorted(plugins.items() if isinstance(plugins, dict) else []):
        if not isinstance(p, dict) or p.get("type") not in KIND_OF_TYPE:
            continue
        kind = KIND_OF_TYPE[p["type"]]
        w = p.get("window") if isinstance(p.get("window"), dict) else {}
        first, last = (_num(w.get(k)) for k in ("first", "last"))
        h = SourceHistory(node, name, kind, clocks.realtime(first) if first is not None else None,
                          clocks.realtime(last) if last is not None else None)
        if h.first is not None and ref is not None:
            h.reach_s = h.complete_s = round(ref - h.first, 6)
        det = p.get("details")
        _FILL[kind](h, det if isinstance(det, dict) else {}, ref, clocks)
        if kind == "ftrace":
            origin = (ftrace_from or {}).get(name) or ftrace_fallback.planned_origin(p)
            h.events_from, h.events_note = origin.form, origin.note
        out.append(h)
    return out


def _ftrace(h: SourceHistory, det: Dict[str, Any], ref: Optional[float], clocks: ClockMap) -> None:
    stats = [s for s in _list(det.get("cpu_stats")) if isinstance(s, dict)]
    size_kb = _num(det.get("buffer_size_kb"))
    if not stats or size_kb is None:
        return
    offset = clocks.trace_clock_offset(det.get("trace_clock"), det.get("clock_offset_s"))
    overruns = {str(s.get("cpu")): int(_num(s.get("overrun")) or 0) for s in stats if _num(s.get("overrun"))}
    h.wrapped = bool(overruns)
    if overruns:
        h.lost = ", ".join(f"cpu{c}: {n} events overwritten" for c, n in sorted(overruns.items()))
    last = h.last
    rates = []
    for s in stats:
        oldest, used = _num(s.get("oldest_event_ts")), _num(s.get("bytes"))
        if oldest is None or used is None or offset is None or last is None:
            continue
        span = last - (oldest + offset)
        if str(s.get("cpu")) in overruns and ref is not None:
            complete = ref - (oldest + offset)
            h.complete_s = complete if h.complete_s is None else min(h.complete_s, complete)
        if span > 0:
            rates.append(used / span)
    if not rates:
        return
    rate = h.rate_bytes_s = max(rates)  # the busiest CPU wraps first
    keeps = size_kb * 1024 / rate
    if h.wrapped:
        kept = h.complete_s if h.complete_s is not None else keeps
        want = 1 << max(10, int(TARGET_SECONDS * rate / 1024 - 1).bit_length())
        h.hint = (f"ftrace kept {_secs(kept)} at {_rate(rate)} (busiest CPU); "
                  f"buffer_size_kb: {want} keeps ~{_secs(want * 1024 / rate)}")
    else:
        h.hint = (f"ftrace ring not full: at {_rate(rate)} (busiest CPU) buffer_size_kb: "
                  f"{int(size_kb)} keeps ~{_secs(keeps)}")


def _tcpdump_ring(det: Dict[str, Any]) -> Optional[float]:
    argv = [str(a) for a in _list(det.get("command"))]
    try:
        size_mb, count = float(argv[argv.index("-C") + 1]), int(argv[argv.index("-W") + 1])
    except (ValueError, IndexError):
        return None
    return size_mb * 1e6 * count


def _packets(h: SourceHistory, det: Dict[str, Any], ref: Optional[float], clocks: ClockMap) -> None:
    captured, kept = _num(det.get("packets_captured")), _num(det.get("packets_in_files"))
    dropped = _num(det.get("packets_dropped_by_kernel")) or 0
    order = [str(n) for n in _list(det.get("files_in_order"))]
    if captured is not None and kept is not None:
        # fewer packets in the files than captured, or the ring's names reused out of order
        h.wrapped = captured > kept or order != sorted(order, key=_ring_index)
        if h.wrapped:
            h.lost = (f"{int(captured - kept)} older packets in rotated-out files" if captured > kept
                      else "older files rotated out")
    if dropped:
        h.lost = "; ".join(x for x in (h.lost, f"{int(dropped)} dropped by the kernel") if x)
    files = [f for f in _list(det.get("files")) if isinstance(f, dict)]
    size = sum(_num(f.get("bytes")) or 0 for f in files)
    ring = _tcpdump_ring(det)
    if h.first is None or h.last is None or h.last <= h.first or not size or ring is None:
        return
    rate = h.rate_bytes_s = size / (h.last - h.first)
    per_file = ring / max(1, _ring_count(det))
    want = max(2, int(TARGET_SECONDS * rate / per_file) + 1)
    verb = "kept" if h.wrapped else "holds"
    h.hint = (f"packets {verb} {_secs(h.last - h.first)} at {_rate(rate)}; the ring of "
              f"{human_bytes(ring)} keeps ~{_secs(ring / rate)}")
    if h.wrapped:
        h.hint += f"; file_count: {want} keeps ~{_secs(want * per_file / rate)}"


def _ring_count(det: Dict[str, Any]) -> int:
    argv = [str(a) for a in _list(det.get("command"))]
    try:
        return int(argv[argv.index("-W") + 1])
    except (ValueError, IndexError):
        return 1


def _kmsg(h: SourceHistory, det: Dict[str, Any], ref: Optional[float], clocks: ClockMap) -> None:
    lost = int(_num(det.get("lost")) or 0)
    first_seq = _num(det.get("first_seq"))
    h.wrapped = bool(lost) or bool(first_seq)
    notes = []
    if first_seq:
        notes.append(f"the kernel ring had dropped records 0..{int(first_seq) - 1} before the run")
    if lost:
        notes.append(f"{lost} records lost during the run")
    h.lost = "; ".join(notes)
    if lost:
        h.hint = "raise log_buf_len= on the kernel command line, or dmesg max_mb"


def _counters(h: SourceHistory, det: Dict[str, Any], ref: Optional[float], clocks: ClockMap) -> None:
    dropped = _num(det.get("series_dropped_before"))
    h.wrapped = dropped is not None
    if dropped is not None:
        h.lost = "series rows before the rotation dropped (max_series_mb)"
        if ref is not None:
            h.complete_s = ref - clocks.realtime(dropped)


_FILL = {"ftrace": _ftrace, "packets": _packets, "kmsg": _kmsg, "counters": _counters}
