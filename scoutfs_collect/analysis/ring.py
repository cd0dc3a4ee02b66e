"""The frames of a node's pcap ring handed on in time order while the archive is read in
name order.

tcpdump's ring reuses ``tcpdump.pcap0..N-1`` in rotation, and the archive holds them in
name order, so after a wrap the newest files come first (``pcap0, pcap1`` before
``pcap2, pcap3`` when ``files_in_order``, the manifest's oldest-first list, is
``pcap2, pcap3, pcap0, pcap1``). A TCP analysis must see its segments in capture order.
:class:`RingOrder` lets the scan read each member once, as it comes: a file whose turn
it is hands its frames on *live* (:meth:`RingOrder.member` gives the scan a frame sink);
a file that comes early is copied to a temporary file while the scan reads it (a tee:
the timeline still gets it at once) and *replayed* when its turn comes
(:meth:`RingOrder.done` after each member, :meth:`RingOrder.finish` at the archive's
end, for files whose predecessors were missing). Memory stays flat; disk holds at most
the early files' bytes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import IO, Dict, List, Optional, Tuple

from scoutfs_collect.analysis.sources import FrameSink
from scoutfs_collect.system.pcap import PcapError, frames


class _Tee:
    """A member stream whose bytes are also written to ``copy`` as they are read."""

    def __init__(self, stream: IO[bytes], copy: IO[bytes]) -> None:
        self.stream, self.copy = stream, copy

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.copy.write(data)
        return data


class RingOrder:
    """One pcap source of one node: ``order`` (its files oldest first, from the manifest's
    ``files_in_order``; empty: the archive's order is taken), ``offset`` (seconds added
    to the pcap's own times, as the timeline does) and ``sink`` (gets every frame)."""

    def __init__(self, order: List[str], offset: float, sink: FrameSink) -> None:
        self.order = list(order)
        self.offset = offset
        self.sink = sink
        self.held: Dict[str, Path] = {}
        self.done_names: List[str] = []
        self._tmp: Optional[tempfile.TemporaryDirectory] = None  # type: ignore[type-arg]

    def _next(self) -> Optional[str]:
        for name in self.order:
            if name not in self.done_names:
                return name
        return None

    def member(self, name: str, stream: IO[bytes]) -> Tuple[IO[bytes], Optional[FrameSink]]:
        """The stream for the scan to read ``name`` from, and the frame sink to give it
        (None: the file came early; its copy is replayed in its turn)."""
        if name not in self.order or name == self._next():
            return stream, self.sink
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="scoutfs-collect-ring.")
        path = Path(self._tmp.name) / name
        self.held[name] = path
        return _Tee(stream, open(path, "wb")), None  # type: ignore[return-value]

    def done(self, name: str, stream: IO[bytes]) -> None:
        """The scan has read ``name`` (``stream``: what :meth:`member` gave it)."""
        if isinstance(stream, _Tee):
            stream.copy.close()
            return
        self.done_names.append(name)
        self._replay_due()

    def _replay_due(self) -> None:
        while True:
            name = self._next()
            if name is None or name not in self.held:
                return
            self._replay(name)

    def _replay(self, name: str) -> None:
        path = self.held.pop(name)
        try:
            with open(path, "rb") as f:
                for _ in frames(f, path, self.offset, self.sink):
                    pass
        except (OSError, PcapError):
            pass
        finally:
            path.unlink()
            self.done_names.append(name)

    def finish(self) -> None:
        """The archive is read: the held files left (their predecessors were missing), in order."""
        for name in [n for n in self.order if n in self.held]:
            self._replay(name)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
