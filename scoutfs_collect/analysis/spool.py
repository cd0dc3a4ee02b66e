"""Spool files: the records of one archive member that fall in the timeline window,
written in time order, one line each, for :func:`write_merged` to merge across members
and nodes. Every record (in the window or not) is also counted into a :class:`Tally`
(span, count and, for the report, density).

Two line forms (:class:`LineFormat`): data lines ``TIME<tab>NODE<tab>SOURCE<tab>TEXT``
(TIME fixed-width ``%018.6f``) that :mod:`.timeline` parses back into events, and, for
``inspect --timeline``, the printed lines themselves (:class:`.lines.Printer`, the one
form of a timeline line). Either way, lines merged as plain strings come out in time
order. The texts come from :mod:`.sources` with their control characters escaped: a
text holds no tab or newline, so it is written as it is either way.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import IO, Dict, Iterable, Iterator, List, Sequence, Tuple

from scoutfs_collect.analysis import sources
from scoutfs_collect.analysis.lines import Printer

FINE = 0.01  # density buckets: 10 ms from FINE_BEFORE s before the trigger to FINE_AFTER after
FINE_BEFORE, FINE_AFTER = 20.0, 5.0
BATCH = 4096  # records formatted, and lines written, at a time


@dataclasses.dataclass
class Tally:
    """What the records of one member (or the part of it one reader read) held."""

    count: int = 0
    inside: int = 0
    first: float = math.inf
    last: float = -math.inf
    fine: Dict[int, int] = dataclasses.field(default_factory=dict)  # 10 ms bucket -> records
    coarse: Dict[int, int] = dataclasses.field(default_factory=dict)  # 1 s bucket -> records


@dataclasses.dataclass(frozen=True)
class LineFormat:
    """How the records in ``[start, end]`` become spool lines.

    ``rendered`` False: data lines, ``tag`` being ``<tab>NODE<tab>SOURCE<tab>``, TIME
    ``%018.6f``-wide, from the same integer microseconds as the printed lines.
    ``rendered`` True: the lines ``inspect --timeline`` prints (:class:`.lines.Printer`
    with ``tag`` = the padded source label).
    ``density``: also count every record into 10 ms / 1 s buckets around ``ref``.
    """

    start: float
    end: float
    ref: float
    tag: str
    rendered: bool = False
    density: bool = False

    def lines(self, records: Iterable[sources.TimedText], tally: Tally) -> List[str]:
        """The lines of the records in the window; every record counted into ``tally``."""
        start, end, ref, tag, rendered = self.start, self.end, self.ref, self.tag, self.rendered
        printer = Printer(ref)
        fine_lo, fine_hi = ref - FINE_BEFORE, ref + FINE_AFTER
        fine, coarse, density = tally.fine, tally.coarse, self.density
        first, last, count, inside = tally.first, tally.last, 0, 0
        held: List[str] = []
        printed: List[Tuple[int, str]] = []  # rendered: (us, text), printed after the loop
        for t, text in records:
            count += 1
            if t < first:
                first = t
            if t > last:
                last = t
            if density:
                if fine_lo <= t < fine_hi:
                    k = int((t - ref) // FINE)
                    fine[k] = fine.get(k, 0) + 1
                else:
                    k = int((t - ref) // 1)
                    coarse[k] = coarse.get(k, 0) + 1
            if start <= t <= end:
                inside += 1
                us = round(t * 1e6)  # lines.micros, inline: once per line of a full ring
                if rendered:
                    printed.append((us, text))
                else:
                    whole, frac = divmod(us, 1000000)
                    held.append(f"{whole:011d}.{frac:06d}{tag}{text}\n")
        tally.count += count
        tally.inside += inside
        tally.first, tally.last = first, last
        return printer.lines(tag, printed) if rendered else held


def spool(records: Iterator[sources.TimedText], fmt: LineFormat, path: Path) -> Tally:
    """Write the lines of ``records`` (one member, in time order) to ``path``."""
    tally = Tally()
    with open(path, "w", encoding="utf-8") as out:
        while True:
            batch = [r for _, r in zip(range(BATCH), records)]
            if not batch:
                break
            out.writelines(fmt.lines(batch, tally))
    return tally


def write_merged(paths: Sequence[Path], out: IO[str]) -> None:
    """Write the spool lines of ``paths`` to ``out`` in time order: through ``sort -m``
    (coreutils, byte order: the same order as :func:`merged`, at C speed) when ``out``
    is a real file and sort is there, else through :func:`merged`."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    sort = shutil.which("sort")
    if fd >= 0 and sort and paths:
        out.flush()
        env = dict(os.environ, LC_ALL="C")
        batch = f"--batch-size={max(16, min(len(paths), 1000))}"
        done = subprocess.run([sort, "-m", batch, "--", *map(str, paths)], stdout=fd,
                              stderr=subprocess.PIPE, env=env)
        if done.returncode == -13 or b"Broken pipe" in done.stderr:
            raise BrokenPipeError("the reader of the timeline went away")
        if done.returncode != 0:
            raise OSError(f"sort -m failed: {done.stderr.decode(errors='replace').strip()}")
        return
    out.writelines(merged(paths))


def merged(paths: Sequence[Path]) -> Iterator[str]:
    """The spool lines of ``paths`` merged in time order (string order of the
    fixed-width time prefix), newline kept."""
    files = [open(p, encoding="utf-8") for p in paths]
    try:
        yield from heapq.merge(*files)
    finally:
        for f in files:
            f.close()
