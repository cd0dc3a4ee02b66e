"""The HTML report in a real browser: Debian's ``chromium`` headless takes a screenshot
(checked not blank by decoding the PNG's pixel rows) and dumps the DOM it built."""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
#: What a file opened offline must not hold: scripts and anything fetched from elsewhere
#: (the SVG namespace URI is a name, never fetched).
NOT_SELF_CONTAINED = ("<script", "http://", "https://", "@import", "url(")
SVG_NAMESPACE = 'xmlns="http://www.w3.org/2000/svg"'


def png_is_not_blank(path: Path) -> bool:
    """Decode the PNG's pixel rows (zlib) and look for more than a handful of byte values."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return len(set(zlib.decompress(idat))) > 16


def chromium(tmp_path: Path, html: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless chromium on ``html`` with a profile dir of its own under ``tmp_path``."""
    profile = tmp_path / f"chromium-{len(list(tmp_path.glob('chromium-*')))}"
    return subprocess.run(CHROMIUM + [f"--user-data-dir={profile}", *args, html.as_uri()],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


def lanes_of(dom: str) -> set:
    """The ``data-source`` of every timeline lane in a report's DOM."""
    return {part.split('"')[1] for part in dom.split('class="lane" data-source=')[1:]}


def check_report(tmp_path: Path, html: Path, lanes: set) -> str:
    """Assert the report is self-contained, renders to a non-blank screenshot and holds
    ``lanes`` and the trigger line in the DOM chromium built; returns that DOM."""
    text = html.read_text()
    for needle in NOT_SELF_CONTAINED:
        assert needle not in text.replace(SVG_NAMESPACE, ""), needle
    shot = tmp_path / "shot.png"
    chromium(tmp_path, html, "--window-size=1200,1600", f"--screenshot={shot}")
    assert shot.exists() and png_is_not_blank(shot)
    dom = chromium(tmp_path, html, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="trigger"' in dom.stdout
    found = lanes_of(dom.stdout)
    assert lanes <= found, found
    return dom.stdout
