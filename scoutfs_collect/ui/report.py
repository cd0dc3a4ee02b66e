"""``scoutfs-collect report``: one self-contained HTML file (no network, no scripts, no
external fonts or styles; inline SVG) from an archive or bundle alone: header, one lane
per source (per node and source in a bundle) with its kept window and density, the
trigger and each stop, the counters that moved, the merged last seconds, the plugins;
at the top the findings of ``inspect --findings`` and their verdict."""

from __future__ import annotations

import collections
import math
import os
import string
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any, Deque, List, Optional, Tuple

from scoutfs_collect import __version__
from scoutfs_collect.analysis import scan, spool
from scoutfs_collect.analysis.lines import Printer
from scoutfs_collect.analysis.timeline import Analysis, Event, utc_us
from scoutfs_collect.system.kernel_text import escape_controls

EVENTS_MAX = 3000  # lines of the merged timeline shown
COUNTERS_MAX = 40
BINS = 240
W, LANE, LEFT, TOP = 1100, 34, 210, 24


def _e(x: Any) -> str:
    """Text for the HTML: its control characters shown as ``\\xHH`` (a manifest's trigger
    reason is a kernel line), then HTML-escaped."""
    return escape(escape_controls(str(x)), quote=True)


def _offset(ms: Optional[float], error_ms: Optional[float]) -> str:
    """A node's clock offset as the report shows it: ``+0.412 ms ± 0.180``, or ``-``."""
    if ms is None:
        return "-"
    return f"{ms:+.3f} ms" + ("" if error_ms is None else f" ± {error_ms:.3f}")


def _table(head: List[str], rows: List[List[str]], cls: str = "") -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{th}</tr>{body}</table>'


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _header(a: Analysis) -> str:
    rows = []
    for n in a.nodes:
        m = n.manifest
        host, trig, result = m.get("host") or {}, m.get("trigger") or {}, m.get("result") or {}
        when = n.aligned(trig.get("time")) if isinstance(trig, dict) else None
        trig_text = (f"{_e(trig.get('name'))} ({_e(trig.get('type'))}): {_e(trig.get('reason'))}"
                     f" at {utc_us(when)}" if when is not None else "none fired")
        status = result.get("exit_status")
        cls = "ok" if status == 0 else "bad"
        rows.append([_e(n.node or host.get("hostname", "?")), _e(host.get("kernel", "?")), trig_text,
                     f'<span class="{cls}">exit {_e(status)}</span>'])
    out = _table(["host", "kernel", "trigger", "result"], rows)
    if a.bundle is not None:
        where, _, what = a.bundle.origin_text().partition(": ")
        what = f", trigger {_e(what)}" if what else ""
        out = f"<p>Cluster bundle: origin <b>{_e(where)}</b>{what}</p>" + out
        head = ["node", "status", "clock offset", "stop after origin's trigger", "error"]
        out += "<p></p>" + _table(head, [
            [_e(r.name), _e(r.status), _offset(r.clock_offset_ms, r.clock_error_ms),
             "-" if r.stop_lag_ms is None else f"{r.stop_lag_ms:.1f} ms", _e(r.error or "")]
            for r in (b.record for b in a.bundle.nodes)])
    return out


def _range(a: Analysis) -> Tuple[float, float]:
    ref = a.window.ref
    starts = [n.aligned((n.manifest.get("times") or {}).get("started")) for n in a.nodes]
    stops = [n.aligned((n.manifest.get("times") or {}).get("stopped")) for n in a.nodes]
    firsts = [s.first for s in a.stats() if s.first is not None and s.kind != "kmsg"]
    lo = min([t for t in starts + firsts if t is not None] + [ref - a.window.before])
    hi = max([t for t in stops if t is not None] + [ref + a.window.after])
    pad = (hi - lo) * 0.02 or 0.1
    return lo - pad, hi + pad


def _bins(s: scan.SourceStats, ref: float, lo: float, hi: float) -> List[int]:
    out = [0] * BINS
    span = hi - lo
    for table, width in ((s.fine, spool.FINE), (s.coarse, 1.0)):
        for k, count in table.items():
            t = ref + (k + 0.5) * width
            if lo <= t < hi:
                out[min(BINS - 1, int((t - lo) / span * BINS))] += count
    return out


def _chart(a: Analysis) -> str:
    lo, hi = _range(a)
    ref, stats = a.window.ref, a.stats()
    x = lambda t: LEFT + (min(max(t, lo), hi) - lo) / (hi - lo) * (W - LEFT - 10)  # noqa: E731
    height = TOP + LANE * len(stats) + 30 + 12 * len(a.nodes)
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
             f'viewBox="0 0 {W} {height}" role="img" aria-label="timeline of every source">']
    for i in range(6):  # axis ticks
        t = lo + (hi - lo) * i / 5
        parts.append(f'<text x="{x(t):.1f}" y="{height - 6}" text-anchor="middle">{t - ref:+.2f} s</text>')
    for i, s in enumerate(stats):
        y = TOP + i * LANE
        parts.append(f'<g class="lane" data-source="{_e(s.label)}" data-records="{s.count}">')
        parts.append(f'<text x="4" y="{y + LANE / 2 + 4:.1f}">{_e(s.label)} ({s.count})</text>')
        if s.first is not None and s.last is not None:
            x0, x1 = x(s.first), x(s.last)
            parts.append(f'<rect class="kept" x="{x0:.1f}" y="{y + 3}" width="{max(1.0, x1 - x0):.1f}" '
                         f'height="{LANE - 6}"><title>{_e(s.label)}: kept {utc_us(s.first)} .. '
                         f'{utc_us(s.last)}</title></rect>')
            if s.first < lo:
                parts.append(f'<text x="{LEFT - 2}" y="{y + LANE / 2 + 4:.1f}" text-anchor="end">◀</text>')
        bins = _bins(s, ref, lo, hi)
        top = max(bins) or 1
        bw = (W - LEFT - 10) / BINS
        for j, c in enumerate(bins):
            if c:
                h = (LANE - 8) * math.log1p(c) / math.log1p(top)
                parts.append(f'<rect class="density" x="{LEFT + j * bw:.1f}" y="{y + LANE - 4 - h:.1f}" '
                             f'width="{max(bw - 0.3, 0.5):.2f}" height="{h:.1f}"/>')
        parts.append("</g>")
    bottom = TOP + LANE * len(stats)
    for i, n in enumerate(a.nodes):  # one label row per node: stops of a cluster are ms apart
        stop = n.aligned((n.manifest.get("times") or {}).get("stopped"))
        if stop is not None:
            label = f"stop {n.node + ' ' if n.node else ''}{(stop - ref) * 1000:+.1f} ms"
            parts.append(f'<g class="stopline" data-node="{_e(n.node)}"><line class="stop" '
                         f'x1="{x(stop):.1f}" x2="{x(stop):.1f}" y1="{TOP - 4}" y2="{bottom + 4 + 12 * i}"/>'
                         f'<text x="{x(stop) + 3:.1f}" y="{bottom + 12 + 12 * i}" text-anchor="end">'
                         f'{_e(label)}</text></g>')
    parts.append(f'<g id="trigger"><line class="trigger" x1="{x(ref):.1f}" x2="{x(ref):.1f}" y1="{TOP - 14}" '
                 f'y2="{bottom}"/><text x="{x(ref) + 3:.1f}" y="{TOP - 6}" fill="#d00">trigger</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _history(a: Analysis) -> str:
    rows = []
    for h in a.history():
        wrap = {True: '<span class="bad">wrapped</span>', False: "no", None: "?"}[h.wrapped]
        reach = "-" if h.reach_s is None else f"{h.reach_s:.3f} s"
        rows.append([_e((h.node + "/" if h.node else "") + h.name), _e(h.kind), reach, wrap,
                     _e(h.lost), _e("; ".join(n for n in (h.events_note, h.hint) if n))])
    return _table(["source", "kind", "reaches back", "ring wrapped", "lost", "sizing hint"], rows)


def _spark(points: List[Tuple[float, int]], lo: float, hi: float) -> str:
    vmin, vmax = min(v for _, v in points), max(v for _, v in points)
    w, h = 220, 28
    xy = " ".join(f"{(t - lo) / (hi - lo) * w:.1f},{h - 2 - (v - vmin) / ((vmax - vmin) or 1) * (h - 4):.1f}"
                  for t, v in points)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">'
            f'<polyline class="spark" points="{xy}"/></svg>')


def _counters(a: Analysis) -> str:
    moved = []
    lo, hi = _range(a)
    for n in a.nodes:
        for (mount, name), series in n.counters.items():
            if len(series.points) >= 2 and series.points[0][1] != series.points[-1][1]:
                delta = series.points[-1][1] - series.points[0][1]
                moved.append((abs(delta), n.node, mount, name, delta, series.points))
    if not moved:
        return "<p>No counter moved.</p>"
    moved.sort(key=lambda m: (-m[0], m[3]))
    rows = [[_e(f"{node + '/' if node else ''}{name}"), _e(mount), f"{delta:+d}", _spark(points, lo, hi)]
            for _, node, mount, name, delta, points in moved[:COUNTERS_MAX]]
    hidden = len(moved) - COUNTERS_MAX
    more = f"<p class='muted'>{hidden} more not shown.</p>" if hidden > 0 else ""
    return _table(["counter", "mount", "change", "over the run"], rows, "counter") + more


def _events(a: Analysis) -> str:
    """The last EVENTS_MAX merged records of the window (the ones nearest the trigger),
    their times and text as the timeline lines print them (:class:`.lines.Printer`)."""
    total = 0
    last: Deque[str] = collections.deque(maxlen=EVENTS_MAX)
    for line in a.lines():
        total += 1
        last.append(line)
    printer = Printer(a.window.ref)
    rows = []
    for line in last:
        e = Event.parse(line)
        rows.append([printer.utc(e.us), printer.rel_text(e.us), _e(e.label), _e(e.text)])
    shown = f"; the last {EVENTS_MAX} shown" if total > EVENTS_MAX else ""
    note = (f"<p class='muted'>{total} records from {a.window.before:g} s before the trigger to "
            f"{a.window.after:g} s after{shown}.</p>")
    return note + _table(["UTC", "s", "source", "record"], rows, "events")


def _plugins(a: Analysis) -> str:
    rows = []
    for n in a.nodes:
        for name, p in sorted((n.manifest.get("plugins") or {}).items()):
            if not isinstance(p, dict):
                continue
            status = str(p.get("status", "?"))
            cls = "ok" if status == "ok" else "bad"
            errors = p.get("errors") or ([p["error"]] if p.get("error") else [])
            rows.append([_e((n.node + "/" if n.node else "") + name), _e(f"{p.get('kind')}/{p.get('type')}"),
                         f'<span class="{cls}">{_e(status)}</span>', "<br>".join(_e(x) for x in errors)])
    return _table(["plugin", "kind/type", "status", "errors"], rows)


def _findings(result: Any) -> str:
    """The verdict, then each finding (severity, time to the trigger, node, key, summary,
    evidence), then the analyzers skipped; a note when the report was made without."""
    if result is None:
        return '<p class="muted">(not analysed)</p>'
    v = result.verdict
    out = [f'<p class="verdict"><b>Verdict: {_e(v.category)}</b>: {_e(v.summary)}'
           + (f' <span class="muted">({_e(", ".join(v.keys))})</span>' if v.keys else "") + "</p>"]
    out += [f'<p class="muted">missing: {_e(m)}</p>' for m in v.missing]
    rows = []
    for f in result.findings:
        rel = "" if f.relative is None else f"{f.relative:+.3f} s"
        ev = "<br>".join(_e(f"{e.source}  {e.text}") for e in f.evidence)
        rows.append([f'<span class="sev-{_e(f.severity)}">{_e(f.severity)}</span>', _e(rel), _e(f.node),
                     _e(f.key), _e(f.summary), f'<span class="mono">{ev}</span>'])
    out.append(_table(["severity", "to trigger", "node", "key", "finding", "evidence"], rows)
               if rows else '<p class="muted">No findings.</p>')
    if result.skipped:
        out.append('<p class="muted">Skipped: ' + "; ".join(_e(f"{s.analyzer}: {s.reason}")
                                                          for s in result.skipped) + "</p>")
    return "\n".join(out)


def render(a: Analysis, findings: Any = None) -> str:
    """The report's HTML text; ``findings``: the :class:`~scoutfs_collect.analysis.findings.Result`."""
    template = string.Template(resources.files("scoutfs_collect.ui").joinpath("report.html")
                               .read_text(encoding="utf-8"))
    kind = "cluster bundle" if a.bundle is not None else "archive"
    return template.substitute(
        title=_e(f"scoutfs-collect report: {kind} {a.path.name}"), header=_header(a),
        findings=_findings(findings), chart=_chart(a),
        per_node=" (per node and source)" if a.bundle is not None else "", ref_utc=utc_us(a.window.ref),
        history=_history(a), counters=_counters(a), events=_events(a), plugins=_plugins(a),
        version=_e(__version__), input=_e(a.path.name))


def write(a: Analysis, path: Path, findings: Any = None) -> None:
    """Write the report atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(a, findings), encoding="utf-8")
    os.replace(tmp, path)
