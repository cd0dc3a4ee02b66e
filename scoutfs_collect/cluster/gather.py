"""Bring every node's archive back (ClusterShell's ``rcopy``) and write the bundle; for
``cluster gather``, first pack on the node the work dir of a run that never finished.

The bundle ``scoutfs-collect-cluster.YYYYMMDD-HHMMSSZ.tar`` (uncompressed: the node
archives are compressed already) has one top directory holding ``cluster.json`` (first
member, so ``inspect`` reads it without the rest) and ``nodes/NODE/<archive>``. It is
written under a temporary name, fsync'ed and renamed, so a bundle that exists is whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from ClusterShell.Event import EventHandler

from scoutfs_collect.archive import read as archive_read
from scoutfs_collect.archive import recover
from scoutfs_collect.cluster.state import PEER_TYPES, ClusterRun, Origin, Recovered, Trigger
from scoutfs_collect.core.events import EventLog
from scoutfs_collect.system.paths import fsync_path

log = logging.getLogger("scoutfs_collect.cluster")
BUNDLE_PREFIX = "scoutfs-collect-cluster"


def bundle_stem(started: float) -> str:
    return f"{BUNDLE_PREFIX}.{time.strftime('%Y%m%d-%H%M%SZ', time.gmtime(started))}"


class _Copies(EventHandler):
    def __init__(self) -> None:
        super().__init__()
        self.rc: Dict[str, Optional[int]] = {}
        self.errors: Dict[str, List[str]] = {}

    def ev_read(self, worker, node, sname, msg) -> None:
        self.errors.setdefault(node, []).append(msg.decode("utf-8", "replace").strip())

    def ev_hup(self, worker, node, rc) -> None:
        self.rc[node] = rc


class _Packs(EventHandler):
    """What ``scoutfs-collect pack`` said on each node: its lines and exit status."""

    def __init__(self) -> None:
        super().__init__()
        self.rc: Dict[str, Optional[int]] = {}
        self.lines: Dict[str, List[str]] = {}

    def ev_read(self, worker, node, sname, msg) -> None:
        self.lines.setdefault(node, []).append(msg.decode("utf-8", "replace").strip())

    def ev_hup(self, worker, node, rc) -> None:
        self.rc[node] = rc


def pack_unfinished(task, run: ClusterRun, events: EventLog) -> None:
    """``scoutfs-collect pack WORKDIR`` on each node whose latest run never finished (its
    ``unfinished_workdir``: killed, or powered off and booted again); the archive it
    writes beside the work dir is then fetched as any other. A failure marks the node."""
    from scoutfs_collect.cluster.remote import pack_command, resume

    packs = _Packs()
    wanted = {n.name: n.unfinished_workdir for n in run.nodes.values() if n.unfinished_workdir}
    for node, workdir in wanted.items():
        task.shell(pack_command(workdir), nodes=node, handler=packs, stderr=True, timeout=3600)
    if not wanted:
        return
    resume(task, "gather")
    for node, workdir in wanted.items():
        state, lines = run.nodes[node], packs.lines.get(node, [])
        done = [ln[len("archive: "):] for ln in lines if ln.startswith("archive: ")]
        if packs.rc.get(node) != 0 or not done:
            state.status = "failed"
            said = " | ".join(ln for ln in lines[-3:] if ln) or f"exit {packs.rc.get(node)}"
            state.error = f"its run never finished; packing its work dir {workdir} failed: {said}"
            events.emit("error", node=node, message=state.error)
            continue
        state.remote_archive = done[-1]
        events.emit("node_packed", node=node, workdir=workdir, path=done[-1])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(task, run: ClusterRun, staging: Path, events: EventLog) -> None:
    """Copy each node's archive into ``staging/nodes/NODE/``; failures mark the node."""
    staging.mkdir(mode=0o700, parents=True, exist_ok=True)
    copies = _Copies()
    wanted = {n.name: n.remote_archive for n in run.nodes.values() if n.remote_archive}
    for node, path in wanted.items():
        task.rcopy(path, str(staging), nodes=node, handler=copies, stderr=True, timeout=3600)
    if wanted:
        from scoutfs_collect.cluster.remote import resume

        resume(task, "gather")
    for node, path in wanted.items():
        state = run.nodes[node]
        base = os.path.basename(path)
        copied = staging / f"{base}.{node}"
        if copies.rc.get(node) != 0 or not copied.is_file():
            state.status = "failed"
            why = "; ".join(e for e in copies.errors.get(node, []) if e) or f"exit {copies.rc.get(node)}"
            state.error = f"copying {path} failed: {why}"
            events.emit("error", node=node, message=state.error)
            continue
        dest_dir = staging / "nodes" / node
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / base
        os.replace(copied, dest)
        state.archive = f"nodes/{node}/{base}"
        state.sha256 = _sha256(dest)
        _fill_from_manifest(run, node, dest)
        events.emit("node_archive", node=node, path=state.archive)
    run.times["gathered"] = time.time()


def _fill_from_manifest(run: ClusterRun, node: str, archive: Path) -> None:
    """What the live session did not tell (``cluster gather``) comes from the manifest."""
    state = run.nodes[node]
    try:
        m = archive_read.read_manifest(archive)
    except (OSError, ValueError) as exc:
        log.warning("%s: cannot read the manifest of %s: %s", node, archive.name, exc)
        return
    trig = m.get("trigger") or {}
    if state.trigger is None and trig.get("name"):
        state.trigger = Trigger(name=str(trig.get("name")), type=str(trig.get("type")),
                                reason=str(trig.get("reason", "")), time=float(trig.get("time") or 0))
    result = m.get("result") or {}
    if result.get("packed_by") == "scoutfs-collect pack":  # archive.recover.pack_workdir
        notes = [str(n) for n in result.get("notes") or []]
        state.recovered = Recovered(
            by="cluster gather" if state.unfinished_workdir else "scoutfs-collect pack",
            workdir=state.unfinished_workdir, packed_at=result.get("packed_at"),
            note=notes[-1] if notes else "")
    times = m.get("times") or {}
    if state.stopped is None and times.get("stopped"):
        state.stopped = float(times["stopped"])
    if state.exit is None and m.get("exit_status") is not None:
        state.exit = int(m["exit_status"])


def origin_from_triggers(run: ClusterRun) -> Optional[Origin]:
    """The earliest own (not peer/operator) trigger among the nodes, for ``cluster gather``."""
    own = [(n.trigger.time - n.offset(), n) for n in run.nodes.values()
           if n.trigger is not None and n.trigger.type not in PEER_TYPES]
    if not own:
        ops = [n for n in run.nodes.values() if n.trigger is not None]
        if not ops:
            return None
        first = min(ops, key=lambda n: n.trigger.time)
        t = first.trigger
        return Origin(node=None, name=t.name, type=t.type, reason=t.reason, time=t.time - first.offset())
    _, first = min(own, key=lambda item: item[0])
    t = first.trigger
    return Origin(node=first.name, name=t.name, type=t.type, reason=t.reason, time=t.time)


def write_bundle(run: ClusterRun, staging: Path, bundle_dir: Path, stem: str) -> Path:
    """Pack ``cluster.json`` and the fetched archives; returns the bundle's path."""
    final = bundle_dir / f"{stem}.tar"
    n = 1
    while final.exists():
        final = bundle_dir / f"{stem}.{n}.tar"
        n += 1
    top = final.name[: -len(".tar")]
    tmp = bundle_dir / f".{final.name}.partial"
    doc = json.dumps(run.as_json(), indent=2, default=str).encode() + b"\n"
    try:
        with open(tmp, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                info = tarfile.TarInfo(f"{top}/cluster.json")
                info.size, info.mtime, info.mode = len(doc), int(time.time()), 0o600
                tar.addfile(info, io.BytesIO(doc))
                for state in run.nodes.values():
                    if state.archive:
                        tar.add(str(staging / state.archive), arcname=f"{top}/{state.archive}")
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, final)
        fsync_path(bundle_dir)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def remove_leftovers(bundle_dir: Path) -> List[str]:
    """Remove what a killed coordinator left in ``bundle_dir`` (its staging directory
    of copied archives, its partial bundle); one note each. See recover.remove_stale."""
    return (recover.remove_stale(bundle_dir, f".{BUNDLE_PREFIX}.*.staging",
                                 "the copies of a cluster run killed while gathering")
            + recover.remove_stale(bundle_dir, f".{BUNDLE_PREFIX}.*.partial",
                                   "a partial bundle of a cluster run killed while writing it"))


def remove_staging(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
