"""``scoutfs-collect cluster``: preflight every node, run one session per node, stop them all
on the first trigger, gather the archives into one bundle. Also ``cluster check`` and
``cluster gather``.

Exit status: 0 every node archived; 1 bundle written but some node failed, is missing
or was lost; 2 usage or preflight error, nothing started; 3 no bundle could be written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Dict, List, Optional

from ClusterShell.Event import EventHandler

from scoutfs_collect.cluster import gather, preflight, remote
from scoutfs_collect.cluster.session import RunSessions
from scoutfs_collect.cluster.state import ClusterRun, NodeState
from scoutfs_collect.core.errors import EXIT_NO_ARCHIVE, EXIT_OK, EXIT_PLUGIN_FAILED, EXIT_USAGE, UsageError
from scoutfs_collect.core.events import EventLog
from scoutfs_collect.ui.console import Console, stdout_line

log = logging.getLogger("scoutfs_collect.cluster")


@dataclasses.dataclass
class ClusterRequest:
    """What the command line asked for."""

    argv: List[str]
    nodes: List[str]
    ssh_options: Optional[str]
    bundle_dir: Path
    events_file: Optional[Path] = None
    allow_missing: bool = False
    capture: Optional[remote.CaptureArgs] = None

    @property
    def nodeset(self) -> str:
        return remote.fold(self.nodes)


def request_from(ns, argv: List[str]) -> ClusterRequest:
    """Validate the arguments (one-line errors, exit 2) into a request."""
    bundle_dir = Path(getattr(ns, "bundle_dir", None) or ".").absolute()
    if not bundle_dir.is_dir():
        raise UsageError(f"cluster: --bundle-dir {bundle_dir}: no such directory")
    if not os.access(bundle_dir, os.W_OK | os.X_OK):
        raise UsageError(f"cluster: --bundle-dir {bundle_dir}: not writable")
    capture = None
    if getattr(ns, "ip", None) is not None:
        for item in ns.overrides:
            if "=" not in item:
                raise UsageError(f"cluster: --set {item!r}: expected DOTTED.KEY=VALUE")
        capture = remote.CaptureArgs(profile=ns.profile, overrides=list(ns.overrides),
                                     output_dir=ns.output_dir, ip=ns.ip, port=ns.port)
    return ClusterRequest(argv=["scoutfs-collect"] + list(argv), nodes=remote.nodes_of(ns.nodeset),
                          ssh_options=ns.ssh_options, bundle_dir=bundle_dir,
                          events_file=getattr(ns, "events_file", None),
                          allow_missing=bool(getattr(ns, "allow_missing", False)), capture=capture)


def _preflight(task, req: ClusterRequest, console: Console) -> Dict[str, preflight.NodeCheck]:
    assert req.capture is not None
    checks = preflight.run_checks(task, req.capture, req.nodes)
    preflight.print_grouped(checks, console.line)
    return checks


def _fatal(checks: Dict[str, preflight.NodeCheck], allow_missing: bool) -> List[str]:
    return [c.node for c in checks.values()
            if not c.ready and not (allow_missing and c.unreachable)]


def cmd_check(ns, argv, console: Console) -> int:
    """``cluster check``: the preflight of every node, grouped by node."""
    req = request_from(ns, argv)
    checks = _preflight(remote.make_task(req.ssh_options, len(req.nodes)), req, console)
    bad = _fatal(checks, req.allow_missing)
    if bad:
        console.line(f"check: {remote.fold(bad)}: problem(s) to fix before a cluster run")
        return EXIT_USAGE
    console.line(f"check: {req.nodeset} ready to run")
    return EXIT_OK


def cmd_run(ns, argv, console: Console) -> int:
    """``cluster``: preflight, one session per node until every node packed, the bundle."""
    req = request_from(ns, argv)
    assert req.capture is not None
    # SIGTERM as Ctrl-C: before the run nothing is started; during it the sessions'
    # handler stops every node; while gathering it ends with exit 3.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    task = remote.make_task(req.ssh_options, len(req.nodes))
    run = ClusterRun(argv=req.argv, nodeset=req.nodeset, nodes={n: NodeState(n) for n in req.nodes})
    run.times["started"] = time.time()
    events = EventLog(req.events_file)
    try:
        checks = _preflight(task, req, console)
        bad = _fatal(checks, req.allow_missing)
        start = [c.node for c in checks.values() if c.ready]
        if bad or not start:
            message = (f"preflight: problem(s) on {remote.fold(bad)}" if bad
                       else "preflight: no node reachable")
            events.emit("error", message=message)
            events.emit("finished", exit_status=EXIT_USAGE)
            console.line(f"error: {message}; nothing was started on any node")
            return EXIT_USAGE
        for c in checks.values():
            run.nodes[c.node].version = c.version
            if c.unreachable:
                run.nodes[c.node].status = "missing"
                run.nodes[c.node].error = c.report()[0].replace("error: ", "", 1)
        console.line(f"starting {remote.fold(start)}"
                     + (f" ({remote.fold([n for n in req.nodes if n not in start])} missing)"
                        if len(start) < len(req.nodes) else ""))
        sessions = RunSessions(task, run, events, on_change=console.line)
        tree = remote.tree_mode(task)
        if tree:
            console.line("tree mode: through the gateways of ClusterShell's topology.conf")
        sessions.start(remote.run_commands(req.capture, start, tree))
        try:
            remote.resume(task, "run")
        except UsageError as exc:  # the nodes go on recording; gather what finished
            events.emit("error", message=str(exc))
            console.line(f"error: {exc}")
            for state in run.nodes.values():
                if state.status == "running":
                    state.status, state.error = "lost", f"session lost: {exc}"
        finally:
            sessions.close()
        return _bundle(task, run, req, events, console)
    finally:
        events.close()


def _bundle(task, run: ClusterRun, req: ClusterRequest, events: EventLog, console: Console) -> int:
    stem = gather.bundle_stem(run.times["started"] or time.time())
    staging = req.bundle_dir / f".{stem}.staging"
    for note in gather.remove_leftovers(req.bundle_dir):
        console.line(f"note: {note}")
    try:
        gather.fetch(task, run, staging, events)
        if run.origin is None:
            run.origin = gather.origin_from_triggers(run)
        path = gather.write_bundle(run, staging, req.bundle_dir, stem)
    except (OSError, ValueError, KeyboardInterrupt) as exc:
        exc = exc if not isinstance(exc, KeyboardInterrupt) else "interrupted while gathering"
        events.emit("error", message=f"bundle: {exc}")
        events.emit("finished", exit_status=EXIT_NO_ARCHIVE)
        console.line(f"error: no bundle written: {exc}; the archives are still on the nodes "
                     f"('scoutfs-collect cluster gather -w {req.nodeset}' collects them)")
        return EXIT_NO_ARCHIVE
    finally:
        gather.remove_staging(staging)
    status = EXIT_OK if run.all_ok() else EXIT_PLUGIN_FAILED
    for name, state in run.nodes.items():
        if state.status != "ok":
            console.line(f"{name}: {state.status}: {state.error or ''}".rstrip(": "))
    events.emit("bundle", path=str(path))
    events.emit("finished", exit_status=status)
    stdout_line(f"bundle: {path}")
    return status


class _Status(EventHandler):
    def __init__(self, run: ClusterRun) -> None:
        super().__init__()
        self.run = run
        self.rc: Dict[str, Optional[int]] = {}
        self.lines: Dict[str, List[str]] = {}
        self.reports: Dict[str, dict] = {}

    def ev_read(self, worker, node, sname, msg) -> None:
        text = msg.decode("utf-8", "replace").strip()
        if node not in self.run.nodes:  # a gateway's own message (tree mode)
            log.warning("%s: %s", node, text)
            return
        if sname == "stdout" and text.startswith("{"):
            try:
                self.reports[node] = json.loads(text)
                return
            except ValueError:
                pass
        self.lines.setdefault(node, []).append(text)

    def ev_hup(self, worker, node, rc) -> None:
        self.rc[node] = rc


def cmd_gather(ns, argv, console: Console) -> int:
    """``cluster gather``: bundle each node's latest archive (after a lost coordinator);
    a latest run that never finished (killed, or its node powered off) is packed on its
    node first, from its work dir, and recorded ``recovered``."""
    req = request_from(ns, argv)
    task = remote.make_task(req.ssh_options, len(req.nodes))
    run = ClusterRun(argv=req.argv, nodeset=req.nodeset, nodes={n: NodeState(n) for n in req.nodes})
    run.times["started"] = time.time()
    events = EventLog(req.events_file)
    try:
        status = _Status(run)
        output_dir = getattr(ns, "output_dir", None)
        for node in req.nodes:
            task.shell(remote.status_command(output_dir, node), nodes=node, handler=status, stderr=True,
                       timeout=60)
        remote.resume(task, "gather")
        for node, state in run.nodes.items():
            report = status.reports.get(node)
            said = "; ".join(t for t in status.lines.get(node, []) if t)
            if report is None:
                state.status = "missing" if status.rc.get(node) == 255 else "failed"
                state.error = f"no status from the node ({said or 'no answer'})"
            elif report.get("running"):
                state.status = "failed"
                state.error = (f"still recording (pid {report.get('pid')}): gather again after its "
                               "trigger, or end it with 'scoutfs-collect stop' there")
            elif report.get("unpacked"):  # killed or powered off: packed on the node below
                state.status = "ok"
                state.version = report.get("version")
                state.unfinished_workdir = report["workdir"]
            elif not report.get("archive"):
                state.status = "failed"
                state.error = (f"its latest run left neither archive nor work dir ({report['workdir']})"
                               if report.get("workdir") else "it has no run")
            else:
                state.status = "ok"
                state.version = report.get("version")
                state.remote_archive = report["archive"]
        gather.pack_unfinished(task, run, events)
        return _bundle(task, run, req, events, console)
    finally:
        events.close()
