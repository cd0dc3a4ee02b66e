"""Errors the CLI turns into one line on stderr and an exit status."""

from __future__ import annotations

EXIT_OK = 0
EXIT_PLUGIN_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_ARCHIVE = 3


def one_line(text: str) -> str:
    """``text`` with newlines and other unprintable characters shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class UsageError(Exception):
    """Bad input (argument, profile, plugin file) or failed preflight: exit 2, nothing written.

    The message is complete and names its place, e.g.
    ``custom.yaml:7:5: collectors.tcpdump: unknown option 'file_cout'
    (did you mean 'file_count'?)``. Unprintable characters (from user input) are escaped.
    """

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))
