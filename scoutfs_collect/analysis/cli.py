"""The analysis commands' arguments and handlers, registered by core/cli.py:
``inspect ARCHIVE --timeline [--before S] [--after S] [--sources LIST] [--json]``,
``inspect ARCHIVE --export perfetto -o FILE.json``, ``inspect ARCHIVE|BUNDLE --findings [--json]``
and ``report ARCHIVE|BUNDLE [-o FILE.html]``."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from scoutfs_collect.core.errors import EXIT_OK, UsageError


def _seconds(value: str) -> float:
    try:
        s = float(value)
    except ValueError:
        s = -1.0
    if not 0 <= s < 1e7:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds (0 or more)")
    return s


def add_inspect_options(p: argparse.ArgumentParser) -> None:
    """The timeline and export options of ``inspect``."""
    p.add_argument("--timeline", action="store_true",
                   help="every source's records around the trigger, merged on one clock")
    p.add_argument("--before", type=_seconds, default=2.0, metavar="SECONDS",
                   help="timeline/export: seconds before the trigger (default 2)")
    p.add_argument("--after", type=_seconds, default=0.1, metavar="SECONDS",
                   help="timeline/export: seconds after the trigger (default 0.1)")
    p.add_argument("--sources", metavar="LIST",
                   help="timeline/export: comma-separated kinds (kmsg,ftrace,packets,counters) "
                        "or plugin instance names (default: all)")
    p.add_argument("--export", choices=["perfetto"],
                   help="write the timeline as Chrome trace-event JSON (Perfetto UI) to -o FILE")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="--export: the file to write")
    p.add_argument("--findings", action="store_true",
                   help="what the records show: every analyzer's findings and the verdict on the fence")
    p.add_argument("--plugin-dir", action="append", default=[], metavar="DIR",
                   help="--findings, report: also load the analyzers of the .py files in DIR")


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report of an archive or bundle")
    p.add_argument("archive", type=Path, metavar="ARCHIVE|BUNDLE")
    p.add_argument("-o", "--output", type=Path, metavar="FILE.html",
                   help="where to write it (default: the input's name with .html, here)")
    p.add_argument("--before", type=_seconds, default=2.0, metavar="SECONDS",
                   help="seconds of merged records before the trigger shown (default 2)")
    p.add_argument("--after", type=_seconds, default=0.1, metavar="SECONDS")
    p.add_argument("--plugin-dir", action="append", default=[], metavar="DIR",
                   help="also load the analyzers of the .py files in DIR (the Findings section)")


def wants_analysis(ns: argparse.Namespace) -> bool:
    """Whether ``inspect`` was asked for a timeline or an export (else the manifest report)."""
    return bool(ns.timeline or ns.export or getattr(ns, "findings", False))


def _analyse(ns: argparse.Namespace, command: str, counters: bool = False, text: bool = False,
             opened: Any = None):
    from scoutfs_collect.analysis import timeline

    if not ns.archive.is_file():
        raise UsageError(f"{command}: {ns.archive}: no such archive")
    try:
        return timeline.analyse(ns.archive, ns.before, ns.after, getattr(ns, "sources", None), counters,
                                text, opened=opened)
    except ValueError as exc:
        raise UsageError(f"{command}: {exc}") from None


def inspect(ns: argparse.Namespace) -> int:
    """``inspect --timeline`` / ``--export``."""
    from scoutfs_collect.analysis import perfetto, timeline

    if getattr(ns, "findings", False):
        return findings(ns)
    if getattr(ns, "node", None):
        raise UsageError("inspect: --node is for the summary of one node's archive; --timeline and "
                         "--export show every node of a bundle (narrow them with --sources)")
    if ns.export and ns.output is None:
        raise UsageError("inspect: --export perfetto needs -o FILE.json")
    if ns.output is not None and not ns.export:
        raise UsageError("inspect: -o FILE is for --export")
    if ns.export and ns.output.parent and not ns.output.parent.is_dir():
        raise UsageError(f"inspect: -o {ns.output}: no such directory {ns.output.parent}")
    with _analyse(ns, "inspect", text=bool(ns.timeline and not ns.json and not ns.export)) as a:
        if ns.export:
            perfetto.write(a, ns.output)
            print(f"perfetto: {ns.output}", file=sys.stderr)
        if ns.timeline:
            (timeline.write_json if ns.json else timeline.render)(a, sys.stdout)
    return EXIT_OK


def findings(ns: argparse.Namespace) -> int:
    """``inspect ARCHIVE|BUNDLE --findings [--json]``: exit 0 whatever was found."""
    import json

    from scoutfs_collect.analysis import findings as run_findings

    if ns.timeline or ns.export or getattr(ns, "node", None) or getattr(ns, "members", False):
        raise UsageError("inspect: --findings goes alone "
                         "(not with --timeline, --export, --node or --members)")
    if not ns.archive.is_file():
        raise UsageError(f"inspect: {ns.archive}: no such archive")
    try:
        result = run_findings.run(ns.archive, run_findings.analyzer_types(ns.plugin_dir))
    except ValueError as exc:
        raise UsageError(f"inspect: {exc}") from None
    if ns.json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=1, ensure_ascii=False) + "\n")
    else:
        run_findings.render(result, ns.archive.name, sys.stdout)
    return EXIT_OK


def history_section(manifest: Dict[str, Any]) -> Optional[list]:
    from scoutfs_collect.analysis import timeline

    return timeline.history_of_manifest(manifest)


def report(ns: argparse.Namespace) -> int:
    """``report ARCHIVE|BUNDLE [-o FILE.html]``."""
    from scoutfs_collect.ui import report as html_report

    out = ns.output or Path(ns.archive.name.split(".tar")[0] + ".html")
    if out.parent and not out.parent.is_dir():
        raise UsageError(f"report: -o {out}: no such directory {out.parent}")
    from scoutfs_collect.analysis import findings as run_findings
    from scoutfs_collect.analysis import timeline
    from scoutfs_collect.analysis.findings_process import FindingsProcess

    if not ns.archive.is_file():
        raise UsageError(f"report: {ns.archive}: no such archive")
    types = run_findings.analyzer_types(ns.plugin_dir)
    with contextlib.ExitStack() as stack:
        try:  # a bundle's node archives copied out once, for both passes
            opened = stack.enter_context(timeline.open_input(ns.archive))
        except ValueError as exc:
            raise UsageError(f"report: {exc}") from None
        # the analyzers' pass on a CPU of its own, beside this process's timeline
        findings_pass = stack.enter_context(FindingsProcess(ns.archive, types, opened))
        a = stack.enter_context(_analyse(ns, "report", counters=True, opened=opened))
        try:
            result = findings_pass.result()
        except ValueError as exc:
            raise UsageError(f"report: {exc}") from None
        html_report.write(a, out, result)
    print(f"report: {out}")
    return EXIT_OK


def history_text(manifest: Dict[str, Any]) -> str:
    """The "History kept" section appended to ``inspect``'s report."""
    from scoutfs_collect.analysis import history
    from scoutfs_collect.analysis.clocks import ClockMap
    from scoutfs_collect.analysis.scan import reference_time

    rows = history.of_manifest(manifest, reference_time(manifest), ClockMap.from_manifest(manifest))
    if not rows:
        return ""
    lines = ["", "History kept (per source, before the trigger)"]
    lines += [f"  {h.name:<18} {h.line()}" for h in rows]
    return "\n".join(lines) + "\n"
