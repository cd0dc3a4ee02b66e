"""``inspect ARCHIVE|BUNDLE --findings [--json]`` and the report's Findings section: every
registered analyzer (:class:`scoutfs_collect.plugin.api.Analyzer`) handed the records of
the kinds it declares by the one streaming pass of :mod:`.scan` (a :class:`Feed` rides
along it: the archive is read once whatever the number of analyzers), then their
findings, the analyzers skipped for want of data, and the verdict (:mod:`.verdict`).

Packet records are not the timeline's lines (those exist only inside its window, and a
burst is one line): the scan hands the Feed every captured frame of a pcap member
(:meth:`Feed.member`), decoded once (:func:`.packets.segment`) for all analyzers, each
ring in capture order (:class:`.ring.RingOrder`)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Set, TextIO, Tuple

from scoutfs_collect.analysis import packets, sources, verdict
from scoutfs_collect.analysis.clocks import ClockMap
from scoutfs_collect.analysis.ring import RingOrder
from scoutfs_collect.plugin.finding import AnalysisContext, Finding, NodeInfo, Record

FORMAT = 1
SYSINFO_FILES = ("sysinfo-start.json", "sysinfo-stop.json")
#: Why an analyzer is skipped when no node's archive holds a kind it reads.
MISSING = {"kmsg": "no kernel log (the dmesg collector) in any archive",
           "ftrace": "no ftrace events in any archive",
           "packets": "no packet capture (the tcpdump collector) in any archive",
           "counters": "no scoutfs counter series (the scoutfs-counters collector) in any archive",
           "sysinfo": "no sysinfo snapshot (the sysinfo collector) in any archive",
           "manifest": "no node archive at all",
           "bundle": "not a cluster bundle (a single node's archive)"}


@dataclasses.dataclass
class Skipped:
    """An analyzer that did not run to the end: its type and why."""

    analyzer: str
    reason: str

    def as_dict(self) -> Dict[str, str]:
        return {"analyzer": self.analyzer, "reason": self.reason}


@dataclasses.dataclass
class Result:
    """What ``--findings`` prints: the verdict, the findings in time order, the skipped."""

    verdict: verdict.Verdict
    findings: List[Finding]
    skipped: List[Skipped]
    trigger: float

    def as_dict(self) -> Dict[str, Any]:
        return {"format": FORMAT, "verdict": self.verdict.as_dict(),
                "findings": [f.as_dict() for f in self.findings],
                "skipped": [s.as_dict() for s in self.skipped]}


class _FrameRecord(Record):
    """The Record of a TCP or UDP frame: its ``text`` (``src → dst TCP len N``) is made
    from ``data`` (the Segment) when first read; the analyzers of a million frames
    mostly read only ``data``. Otherwise a Record like any other."""

    def __init__(self, node: str, source: str, kind: str, time: float, text: Optional[str],
                 data: Any = None) -> None:
        d = self.__dict__
        d["node"], d["source"], d["kind"], d["time"], d["data"] = node, source, kind, time, data
        if text is not None:
            d["text"] = text

    def __getattr__(self, name: str) -> Any:  # only for an attribute not in __dict__
        if name != "text" or "data" not in self.__dict__:
            raise AttributeError(name)
        text = self.__dict__["text"] = self.data.text()
        return text


class Feed:
    """The analyzers' side of the scan: built from the registered analyzer types,
    told of the bundle (:meth:`open`) and of each node's manifest (:meth:`begin`), then
    handed the records of each member as the scan passes them (:meth:`tap`,
    :meth:`take` for the sysinfo snapshots)."""

    def __init__(self, types: List[Any]) -> None:
        self.types = types  # registry PluginType of kind "analyzer"
        self.kinds: Set[str] = {k for t in types for k in t.cls.sources}
        self.ctx: Optional[AnalysisContext] = None
        self.live: List[Tuple[Any, Any]] = []  # (type, analyzer object) still running
        self.failed: Dict[str, str] = {}
        self.bundle: Any = None
        self.names: Dict[str, str] = {}  # scan node ("" for an archive) -> node name
        self.clocks: Dict[str, ClockMap] = {}
        self.sysinfo_dirs: Dict[str, Set[str]] = {}
        self.rings: Dict[Tuple[str, str], RingOrder] = {}  # (scan node, source) -> its ring

    def timeline_kinds(self) -> List[str]:
        """The timeline source kinds the analyzers read (what the scan must read)."""
        return [k for k in sources.KINDS if k in self.kinds]

    def wants_split_kinds(self) -> bool:
        return bool(self.kinds & {"ftrace", "packets"})

    def open(self, bundle: Any) -> None:
        self.bundle = bundle

    def begin(self, node: str, manifest: Dict[str, Any], clocks: ClockMap, ref: float) -> None:
        """A node's archive starts: its manifest has been read."""
        if self.ctx is None:
            self._start(manifest, ref)
        assert self.ctx is not None
        host = manifest.get("host") if isinstance(manifest.get("host"), dict) else {}
        name = node or str(host.get("hostname") or "") or "this node"
        self.names[node], self.clocks[node] = name, clocks
        plugins = manifest.get("plugins") if isinstance(manifest.get("plugins"), dict) else {}
        self.sysinfo_dirs[node] = {n for n, p in plugins.items()
                                   if isinstance(p, dict) and p.get("type") == "sysinfo"}
        kinds = {s.kind for s in sources.specs(manifest, clocks) if s.offset is not None} | {"manifest"}
        if self.sysinfo_dirs[node]:
            kinds.add("sysinfo")
        info = self.ctx.node(name)
        if info is None:
            info = NodeInfo(name, manifest)
            self.ctx.nodes.append(info)
        info.manifest, info.kinds = manifest, tuple(sorted(kinds))

    def _start(self, manifest: Dict[str, Any], ref: float) -> None:
        target = manifest.get("target") if isinstance(manifest.get("target"), dict) else {}
        self.ctx = AnalysisContext(ref, [], self.bundle is not None,
                                   f"{target.get('ip')}:{target.get('port')}" if target else "")
        for n in (self.bundle.nodes if self.bundle is not None else []):
            r = n.record
            self.ctx.nodes.append(NodeInfo(r.name, None, (), r.status, r.error or "", [], r.clock_offset_ms))
        for t in self.types:
            try:
                self.live.append((t, t.cls(self.ctx)))
            except Exception as exc:  # one analyzer's failure costs only its own findings
                self.failed[t.type_name] = f"failed to start: {type(exc).__name__}: {exc}"

    def member(self, node: str, spec: sources.SourceSpec, name: str, stream: IO[bytes]
               ) -> Tuple[IO[bytes], Optional[sources.FrameSink]]:
        """A pcap member ``name`` of ``spec`` is about to be read: the stream the scan
        reads it from and the frame sink it hands each frame to (None: nobody reads
        packets, or the file came before its turn and is replayed later)."""
        if spec.kind != "packets" or "packets" not in self.kinds or spec.offset is None:
            return stream, None
        ring = self.rings.get((node, spec.name))
        if ring is None:
            order = spec.details.get("files_in_order")
            order = [str(n) for n in order] if isinstance(order, list) else []
            sink = self._frame_sink(self.names.get(node, node), spec.name)
            ring = self.rings[(node, spec.name)] = RingOrder(order, spec.offset, sink)
        return ring.member(name, stream)

    def member_done(self, node: str, spec: sources.SourceSpec, name: str, stream: IO[bytes]) -> None:
        """The scan has read the member (``stream``: what :meth:`member` gave it)."""
        ring = self.rings.get((node, spec.name))
        if ring is not None:
            ring.done(name, stream)

    def end(self, node: str) -> None:
        """A node's archive is read: its rings' held files are replayed."""
        for (n, _), ring in list(self.rings.items()):
            if n == node:
                ring.finish()

    def _frame_sink(self, name: str, source: str) -> sources.FrameSink:
        readers = [pair for pair in self.live if "packets" in pair[0].cls.sources]
        calls = [(pair[0].type_name, pair[1].record) for pair in readers]
        decoder = packets.FrameDecoder(None)
        at = decoder.at
        failed = self.failed

        def sink(t: float, linktype: int, buf: bytes, start: int, end: int) -> None:
            nonlocal decoder, at
            if linktype != decoder.linktype:
                decoder = packets.FrameDecoder(linktype)
                at = decoder.at
            seg = at(t, buf, start, end)
            if seg is not None:
                rec: Record = _FrameRecord(name, source, "packets", t, None, seg)
            else:
                rec = Record(name, source, "packets", t, packets.decode(t, linktype, buf[start:end],
                                                                        end - start).text(), None)
            for type_name, record in calls:
                try:
                    record(rec)
                except Exception as exc:  # one analyzer's failure costs only its own findings
                    failed[type_name] = f"failed on a packets record: {type(exc).__name__}: {exc}"
            if failed:
                calls[:] = [c for c in calls if c[0] not in failed]
                self.live[:] = [p for p in self.live if p[0].type_name not in failed]
        return sink

    def _send(self, rec: Record) -> None:
        for pair in list(self.live):
            t, a = pair
            if rec.kind in t.cls.sources:
                try:
                    a.record(rec)
                except Exception as exc:
                    self.failed[t.type_name] = f"failed on a {rec.kind} record: {type(exc).__name__}: {exc}"
                    self.live.remove(pair)

    def tap(self, node: str, spec: sources.SourceSpec, records: Iterator[sources.TimedText]
            ) -> Iterator[sources.TimedText]:
        """``records`` passed through unchanged, each also handed to the analyzers that
        read ``spec.kind`` (packets: see :meth:`member`)."""
        if spec.kind not in self.kinds or spec.kind == "packets":
            return records
        return self._tapped(self.names.get(node, node), spec, records)

    def _tapped(self, name: str, spec: sources.SourceSpec, records: Iterator[sources.TimedText]
                ) -> Iterator[sources.TimedText]:
        send, source, kind = self._send, spec.name, spec.kind
        for t, text in records:
            data = _counter_change(text) if kind == "counters" else None
            send(Record(name, source, kind, t, text, data))
            yield t, text

    def take(self, node: str, parts: List[str], member: Any, tar: Any) -> bool:
        """A sysinfo snapshot of ``node``'s archive: read (a few hundred KiB at most),
        its addresses noted, handed to the sysinfo analyzers. False for any other member."""
        if len(parts) != 3 or parts[1] not in self.sysinfo_dirs.get(node, ()) or \
                parts[2] not in SYSINFO_FILES:
            return False
        stream: Optional[IO[bytes]] = tar.extractfile(member)
        try:
            snap = json.loads(stream.read().decode("utf-8", "replace")) if stream is not None else None
        except ValueError:
            snap = None
        if not isinstance(snap, dict) or not isinstance(snap.get("taken_at"), (int, float)):
            return True
        name = self.names.get(node, node)
        info = self.ctx.node(name) if self.ctx is not None else None
        network = snap.get("network") if isinstance(snap.get("network"), dict) else {}
        for nic in network.values():
            for addr in (nic.get("addrs") or []) if isinstance(nic, dict) else []:
                if info is not None and isinstance(addr, str) and addr not in info.addresses:
                    info.addresses.append(addr)
        t = self.clocks[node].realtime(float(snap["taken_at"]))
        self._send(Record(name, parts[1], "sysinfo", t, str(snap.get("label", parts[2])), snap))
        return True

    def finish(self) -> Result:
        """Every analyzer's findings (or why it was skipped), and the verdict."""
        ctx = self.ctx or AnalysisContext(time.time())
        have = {k for n in ctx.nodes for k in n.kinds} | ({"bundle"} if ctx.bundle else set())
        findings: List[Finding] = []
        skipped: List[Skipped] = []
        live = {t.type_name: a for t, a in self.live}
        for t in self.types:
            missing = [k for k in t.cls.sources if k not in have]
            if missing:
                skipped.append(Skipped(t.type_name, MISSING.get(missing[0], f"no {missing[0]}")))
                continue
            if t.type_name in self.failed or t.type_name not in live:
                skipped.append(Skipped(t.type_name, self.failed.get(t.type_name, "did not start")))
                continue
            try:
                got = list(live[t.type_name].finish() or ())
            except Exception as exc:
                skipped.append(Skipped(t.type_name, f"failed: {type(exc).__name__}: {exc}"))
                continue
            for f in got:
                rel = None if f.time is None else round(f.time - ctx.trigger, 6)
                findings.append(dataclasses.replace(f, relative=rel))
        findings.sort(key=lambda f: (f.time is None, f.time or 0.0, f.key))
        return Result(verdict.decide(findings, ctx), findings, skipped, ctx.trigger)


def _counter_change(text: str) -> Optional[Tuple[str, str, Optional[int]]]:
    """``(mount, counter, change)`` of a counter record's text (:func:`sources.counter_records`:
    ``name +delta  (mount)``, or ``name = value  (mount)`` at a first sighting: change None)."""
    head, _, mount = text.rpartition("  (")
    name, _, rest = head.partition(" ")
    change: Optional[int] = None
    if rest[:1] in "+-" and rest[1:].isdigit():
        change = int(rest)
    return mount[:-1], name, change


def analyzer_types(plugin_dirs: List[str]) -> List[Any]:
    from scoutfs_collect.core import registry

    return registry.load(plugin_dirs).of_kind("analyzer")


def run(path: Path, types: List[Any], opened: Any = None) -> Result:
    """Scan ``path`` once with the analyzers ``types`` (:func:`analyzer_types`); only the
    sources they read are read. ``opened``: ``path`` as :func:`.timeline.open_input`
    opened it."""
    from scoutfs_collect.analysis import timeline

    feed = Feed(types)
    wanted = ",".join(feed.timeline_kinds()) or "kmsg"
    with timeline.analyse(path, 0.0, 0.0, wanted, feed=feed, lines=False, opened=opened):
        return feed.finish()


# ---------------------------------------------------------------- output


def utc(t: Optional[float]) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(round(t % 1 * 1e6)) % 1000000:06d}Z"


def render(result: Result, name: str, out: TextIO) -> None:
    """The human listing: the verdict, each finding with its evidence, the skipped."""
    v = result.verdict
    out.write(f"Findings for {name} (trigger at {utc(result.trigger)})\n")
    out.write(f"Verdict: {v.category}: {v.summary}\n")
    if v.keys:
        out.write(f"  supported by: {', '.join(v.keys)}\n")
    for m in v.missing:
        out.write(f"  missing: {m}\n")
    if not result.findings:
        out.write("\nNo findings.\n")
    for f in result.findings:
        rel = "" if f.relative is None else f"{f.relative:+.3f} s"
        out.write(f"\n[{f.severity:<7}] {rel:>11}  {f.node}  {f.key}\n    {f.summary}\n")
        for e in f.evidence:
            out.write(f"      {e.source}  {utc(e.time)}  {e.text}\n")
    if result.skipped:
        out.write("\nSkipped analyzers\n")
        for s in result.skipped:
            out.write(f"  {s.analyzer}: {s.reason}\n")
