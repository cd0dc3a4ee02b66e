"""The kernel's text in the ``\\xHH`` form /dev/kmsg uses: :func:`unescape` reads it back
(the records of :mod:`.kernel_log`), :func:`escape_controls` writes every control
character of a text in it, for whatever shows a kernel line (the analysis of an archive,
``inspect``, the report). A module of its own, light to import (``inspect`` needs it)."""

from __future__ import annotations

import re

_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def unescape(data: bytes) -> str:
    """Undo the kernel's ``\\xHH`` escaping; invalid UTF-8 becomes U+FFFD."""
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data).decode("utf-8", "replace")


# What escape_controls shows as \xHH: C0 (tab and newline too), DEL, C1, and U+2028/U+2029
# (with \x1c-\x1e and \x85, the characters str.splitlines() breaks a line at). A fixed set,
# not str.isprintable(): that one follows each Python's Unicode tables, and every Python
# must print the same bytes. Printable UTF-8 (and the backslash) is kept as it is.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROLS_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
# has_controls: each C0 byte but the newline, and DEL, looked for with memchr (a regular
# expression scans ~100 times slower, a two-byte needle ~100 times too); C1 and U+2028/9
# in UTF-8 start with the bytes c2 and e2.
_CONTROL_BYTES = tuple(bytes([c]) for c in [*range(0x0a), *range(0x0b, 0x20), 0x7f, 0xc2, 0xe2])


def _hex(match: re.Match) -> str:
    return "".join(f"\\x{b:02x}" for b in match.group().encode("utf-8"))


def escape_controls(text: str) -> str:
    """``text`` with every control character shown as the kernel's ``\\xHH`` (of its UTF-8
    bytes: a tab is ``\\x09``, ESC ``\\x1b``, U+0085 ``\\xc2\\x85``), the form /dev/kmsg
    and the dmesg collector write: what reaches a terminal, a spool line's tab-separated
    fields or a JSON reader holds no control character, and one record is one line."""
    return _CONTROLS.sub(_hex, text)


def escape_controls_in_lines(text: str) -> str:
    """:func:`escape_controls` of each line of ``text``: its newlines are kept."""
    return _CONTROLS_BUT_NEWLINE.sub(_hex, text)


def has_controls(data: bytes) -> bool:
    """Whether UTF-8 ``data`` may hold a character :func:`escape_controls_in_lines` escapes
    (newlines do not count; the first byte of a printable ``©`` or ``→`` says yes too:
    a block that holds one is escaped line by line, to the same result)."""
    return any(b in data for b in _CONTROL_BYTES)
