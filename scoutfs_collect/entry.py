"""The ``scoutfs-collect`` command's entry point (console script and ``python -m``).

``fence-hook`` is dispatched before anything else of ours is imported: scoutfs-fenced
runs it for every fence request, and a module that fails to import (the CLI, the
analysis, the console) must not fail a fence (:mod:`scoutfs_collect.fence.launch`).
Everything else goes to :func:`scoutfs_collect.core.cli.main`.
"""

import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``scoutfs-collect ARGV`` (default ``sys.argv[1:]``); its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["fence-hook"]:
        from scoutfs_collect.fence.launch import main as fence_hook

        return fence_hook(args[1:])
    from scoutfs_collect.core.cli import main as cli_main

    return cli_main(args)
