"""Insert tools/pex-preamble.sh into the /bin/sh boot of a pex made with ``--sh-boot``.

pex's boot script runs the first Python it finds, newest first, down to python3.6, and pex then
fails there with a page of names; it also extracts into PEX_ROOT. The preamble picks a root-only
PEX_ROOT and turns "no Python 3.9-3.13" into one line and exit 2. It goes right after the boot's
``set -eu``; the zip that follows the script is copied entry by entry so that its offsets are
right for the longer script.

    python tools/pex_boot.py IN.pex OUT.pex
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

PREAMBLE = Path(__file__).with_name("pex-preamble.sh")
ANCHOR = b"\nset -eu\n"


def add_preamble(src: Path, dst: Path) -> None:
    """Write ``dst``: ``src`` with the preamble in its sh boot and its zip entries unchanged."""
    with zipfile.ZipFile(src) as pex:
        start = min(info.header_offset for info in pex.infolist())
        script = src.read_bytes()[:start]
        if not script.startswith(b"#!/bin/sh\n") or script.count(ANCHOR) != 1:
            raise SystemExit(f"{src}: not a pex with a /bin/sh boot (built without --sh-boot?)")
        at = script.index(ANCHOR) + len(ANCHOR)
        dst.write_bytes(script[:at] + PREAMBLE.read_bytes() + script[at:])
        with zipfile.ZipFile(dst, "a") as out:
            for info in pex.infolist():
                out.writestr(info, pex.read(info))
    os.chmod(dst, 0o755)


if __name__ == "__main__":
    add_preamble(Path(sys.argv[1]), Path(sys.argv[2]))
