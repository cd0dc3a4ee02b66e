"""Analyzer ``clock``: node clocks of a bundle the timeline cannot (or barely) align."""

from __future__ import annotations

from typing import Iterable

from scoutfs_collect import Analyzer, Evidence, Finding, hookimpl

FAR_MS = 1000.0  # a node clock this far off is aligned only as well as the estimate


class Clock(Analyzer):
    """The node clocks of a cluster bundle (cluster.json `clock_offset_ms`, the node's
    clock minus the coordinator's, estimated from the coordinator's round trips). A node
    with an archive but no estimate (`clock.unaligned`, warning) is shown on its own
    clock: its records may be off by any amount. A node more than 1 s off
    (`clock.offset`, warning) is aligned by the estimate, but its own time stamps (its
    kernel log's UTC, its fence agent's log) disagree with the others' by that much:
    compare them only on the timeline."""

    type_name = "clock"
    sources = ("bundle",)

    def finish(self) -> Iterable[Finding]:
        for n in self.ctx.nodes:
            if n.manifest is None:
                continue
            if n.clock_offset_ms is None:
                yield Finding("clock.unaligned", "warning", "clock",
                              f"{n.name}: no clock offset estimate; its records are on its own clock, "
                              "unaligned", n.name, None,
                              (Evidence("cluster.json", None, f"nodes.{n.name}.clock_offset_ms: null"),))
            elif abs(n.clock_offset_ms) >= FAR_MS:
                yield Finding("clock.offset", "warning", "clock",
                              f"{n.name}: clock {n.clock_offset_ms / 1000:+.3f} s off the coordinator's "
                              "(aligned by the estimate; its own time stamps disagree by that much)",
                              n.name, None,
                              (Evidence("cluster.json", None,
                                        f"nodes.{n.name}.clock_offset_ms: {n.clock_offset_ms}"),),
                              {"clock_offset_ms": n.clock_offset_ms})


@hookimpl
def scoutfs_collect_register(register):
    register.add_analyzer(Clock)
