"""The one form of a timeline line, for every output: ``inspect --timeline`` (its lines
spooled already printed, or printed from the data spools), the report's table, the
``utc``/``rel``/``text`` of ``--json`` and the Perfetto export's text::

    2026-12-03T14:09:18.675884Z  -0.001234  dmesg   TEXT

UTC with microseconds, seconds from the trigger (``%+10.6f``), the source label padded
to the widest label, the record's text. Both times come from one integer count of
microseconds (:func:`micros`), so the same record prints the same bytes whichever path
printed it, and lines compared as strings are in time order. The text is printed as
the readers of :mod:`.sources` made it: control characters already escaped there, once.
"""

from __future__ import annotations

import time
from typing import Iterable, List, Tuple


def micros(t: float) -> int:
    """Epoch seconds as the integer microseconds every printed time is made from."""
    return round(t * 1e6)


class Printer:
    """Prints the timeline lines of one analysis (its trigger at ``ref`` epoch seconds)."""

    __slots__ = ("ref_us", "_second", "_prefix")

    def __init__(self, ref: float) -> None:
        self.ref_us = micros(ref)
        self._second = -1
        self._prefix = ""

    def utc(self, us: int) -> str:
        """``2026-12-03T14:09:18.675884Z``."""
        whole, frac = divmod(us, 1000000)
        if whole != self._second:  # consecutive lines mostly share their second
            self._second = whole
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        return f"{self._prefix}.{frac:06d}Z"

    def rel(self, us: int) -> float:
        """Seconds from the trigger, to the microsecond (``--json``'s ``rel``)."""
        return (us - self.ref_us) / 1e6

    def rel_text(self, us: int) -> str:
        """``-0.001234``: :meth:`rel` as the lines print it, unpadded (the report's column)."""
        return f"{(us - self.ref_us) / 1e6:+.6f}"

    def line(self, us: int, label: str, text: str) -> str:
        """One timeline line, newline included; ``label`` already padded."""
        return self.lines(label, [(us, text)])[0]

    def lines(self, label: str, records: Iterable[Tuple[int, str]]) -> List[str]:
        """:meth:`line` of each ``(us, text)`` of one source, in a loop of its own (the
        lines of a full ring: a call per line would cost ~10% of the formatting)."""
        ref_us, second, prefix = self.ref_us, self._second, self._prefix
        out = []
        for us, text in records:
            whole, frac = divmod(us, 1000000)
            if whole != second:
                second, prefix = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            out.append(f"{prefix}.{frac:06d}Z {(us - ref_us) / 1e6:+10.6f}  {label}  {text}\n")
        self._second, self._prefix = second, prefix
        return out


def utc_us(t: float, _printer: Printer = Printer(0.0)) -> str:  # noqa: B008 (one shared cache)
    """Epoch seconds as ``2026-12-03T14:09:18.675884Z``, as :meth:`Printer.utc` prints them."""
    return _printer.utc(micros(t))
