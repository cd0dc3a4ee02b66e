"""The merged timeline as Chrome trace-event JSON (the "JSON Array/Object Format" that
the Perfetto UI and chrome://tracing open): one process per node, one thread (track) per
source, each record an instant event; counter changes also as counter tracks; the
trigger (and each node's stop) as global instant events.

Format rules kept (https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU):
``ts`` in microseconds, ``pid``/``tid`` integers, ``ph`` ``i`` with scope ``s``, ``M``
metadata naming processes and threads, ``C`` counters with numeric ``args``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Tuple

from scoutfs_collect.analysis.timeline import Analysis


def _us(t: float, base: float) -> float:
    return round((t - base) * 1e6, 3)


def write(a: Analysis, path: Path) -> None:
    """Write the export atomically (temporary file, then rename)."""
    base = a.window.start
    tracks: Dict[Tuple[str, str], Tuple[int, int]] = {}
    pids: Dict[str, int] = {}
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write('{"displayTimeUnit": "ms", "otherData": ')
        out.write(json.dumps({"input": str(a.path), "trigger_epoch": a.window.ref, "ts_zero_epoch": base}))
        out.write(', "traceEvents": [\n')
        first = True

        def emit(ev: Dict[str, Any]) -> None:
            nonlocal first
            out.write(("" if first else ",\n") + json.dumps(ev, ensure_ascii=False))
            first = False

        for n in a.nodes:
            pid = pids.setdefault(n.node, len(pids) + 1)
            emit({"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                  "args": {"name": n.node or str(n.manifest.get("host", {}).get("hostname", "archive"))}})
            for i, s in enumerate(n.specs, start=1):
                tracks[(n.node, s.name)] = (pid, i)
                emit({"name": "thread_name", "ph": "M", "pid": pid, "tid": i,
                      "args": {"name": f"{s.name} ({s.kind})"}})
                emit({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": i,
                      "args": {"sort_index": i}})
            stopped = n.aligned((n.manifest.get("times") or {}).get("stopped"))
            if stopped is not None:
                emit({"name": f"{n.node or 'archive'} stopped", "ph": "i", "s": "p", "pid": pid, "tid": 0,
                      "ts": max(0.0, _us(stopped, base))})
        emit({"name": "trigger", "ph": "i", "s": "g", "pid": 1, "tid": 0, "ts": _us(a.window.ref, base),
              "args": {"utc_epoch": a.window.ref}})
        kinds = {(n.node, s.name): s.kind for n in a.nodes for s in n.specs}
        for e in a.events():
            pid, tid = tracks[(e.node, e.source)]
            ts = max(0.0, _us(e.time, base))
            name = e.text.split(" ", 1)[0] if kinds[(e.node, e.source)] == "counters" else e.text[:80]
            emit({"name": name, "cat": kinds[(e.node, e.source)], "ph": "i", "s": "t", "pid": pid,
                  "tid": tid, "ts": ts, "args": {"text": e.text}})
            if kinds[(e.node, e.source)] == "counters":
                delta = e.text.split(" ", 2)
                if len(delta) > 1 and delta[1][:1] in "+-" and delta[1][1:].isdigit():
                    emit({"name": f"{e.source} {delta[0]}", "ph": "C", "pid": pid, "tid": tid, "ts": ts,
                          "args": {"delta": int(delta[1])}})
        out.write("\n]}\n")
    os.replace(tmp, path)

