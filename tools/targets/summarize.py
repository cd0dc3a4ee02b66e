#!/usr/bin/env python3
"""One line for one kernel's target-tier run, from what its guests left in RESULTS_DIR:

    summarize.py RESULTS_DIR TAG SCOUTFS_STATE

KIND.rc (pytest's exit status per guest kind), KIND-junit.xml (per-test outcome) and
observations.jsonl (freeze mode, events past the fencing line...). Prints
``TAG: PASS|FAIL ...; log: RESULTS_DIR`` and, when the real fence ran (test_fence.py), a
second line with its figures: per freeze mode the scoutfs events each ring kept after the
server's fencing line (``TAG: fence: function-probe 0, user-space 41, old-script 230 scoutfs
events past the fencing line (emulated guest: semantics, not ms)``). Writes
RESULTS_DIR/summary.json; exit 0 on PASS, 1 on FAIL. A guest kind left out by
SCOUTFS_COLLECT_TARGETS_GUESTS (test-targets.sh's) shows as "not run", not as a failure."""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List

KINDS = ("main", "hotplug")
RUN = os.environ.get("SCOUTFS_COLLECT_TARGETS_GUESTS", " ".join(KINDS)).split()


def outcomes(junit: Path) -> Dict[str, str]:
    """test name -> passed | failed | error | skipped."""
    out: Dict[str, str] = {}
    for case in ET.parse(junit).iter("testcase"):
        state = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                state = {"failure": "failed"}.get(tag, tag)
        out[case.get("name", "?")] = state
    return out


def main(argv: List[str]) -> int:
    if len(argv) != 4:
        print("usage: summarize.py RESULTS_DIR TAG SCOUTFS_STATE", file=sys.stderr)
        return 2
    res, tag, scoutfs = Path(argv[1]), argv[2], argv[3]
    summary: Dict[str, object] = {"kernel": tag, "scoutfs": scoutfs, "guests": {}, "tests": {}}
    problems: List[str] = []
    for kind in KINDS:
        if kind not in RUN:
            summary["guests"][kind] = "not run"  # type: ignore[index]
            continue
        rc_file, junit = res / f"{kind}.rc", res / f"{kind}-junit.xml"
        rc = rc_file.read_text().strip() if rc_file.is_file() else ""
        summary["guests"][kind] = rc or "did not finish"  # type: ignore[index]
        if not rc:
            problems.append(f"{kind} guest did not finish (see {kind}.console.log)")
            continue
        failed = 0
        if junit.is_file():
            for name, state in outcomes(junit).items():
                summary["tests"][name] = state  # type: ignore[index]
                if state != "passed":
                    failed += 1
                    problems.append(f"{name} {state}")
        if (res / f"{kind}.stuck").is_file():
            problems.append(f"{kind} guest's tests hung: ended by the watchdog (see {kind}.stuck)")
        elif rc != "0" and not failed:
            problems.append(f"{kind} guest: exit {rc} (see {kind}.log)")
    obs = res / "observations.jsonl"
    seen = [json.loads(line) for line in obs.read_text().splitlines()] if obs.is_file() else []
    summary["observations"] = seen
    (res / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    tests = summary["tests"]
    passed = sum(1 for s in tests.values() if s == "passed")  # type: ignore[union-attr]
    verdict = "PASS" if not problems and passed else "FAIL"
    detail = f"{passed}/{len(tests)} passed"  # type: ignore[arg-type]
    if problems:
        detail += "; " + ", ".join(problems)
    print(f"{tag}: {verdict} ({detail}; scoutfs: {scoutfs}); log: {res}")
    figures = fence_figures(seen)
    if figures:
        print(f"{tag}: fence: {figures}")
    return 0 if verdict == "PASS" else 1


def fence_figures(seen: List[Dict]) -> str:
    """``MODE N, ...`` from the fence_events_past_fencing observations, or ""."""
    past: Dict[str, object] = {}
    for o in seen:
        if o.get("key") == "fence_events_past_fencing" and isinstance(o.get("value"), dict):
            past.update(o["value"])
    if not past:
        return ""
    shown = ", ".join(f"{mode} {'line not in ring' if n is None else n}" for mode, n in past.items())
    return f"{shown} scoutfs events past the fencing line (emulated guest: semantics, not ms)"


if __name__ == "__main__":
    sys.exit(main(sys.argv))
