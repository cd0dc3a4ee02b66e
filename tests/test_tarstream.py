"""The forward-only tar reader the analysis streams archives with: what tar and Python's
tarfile write (pax and GNU long names, sizes, directories) reads back byte for byte, and
a cut or damaged stream is an error naming the archive, never a short member."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from scoutfs_collect.archive.tarstream import TarStream

LONG = "top/" + "d" * 120 + "/" + "f" * 150  # past ustar's 100 + 155 characters


def _tar(fmt: int, files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        d = tarfile.TarInfo("top")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


FILES = {"top/manifest.json": b"{}", LONG: os.urandom(70_000), "top/\u00e9t\u00e9.txt": b"x" * 513,
         "top/empty": b""}


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_members_read_back_as_written(fmt):
    stream = TarStream(io.BytesIO(_tar(fmt, FILES)), "t.tar")
    got = {}
    for member in stream:
        f = stream.extractfile(member)
        if member.isdir():
            assert f is None and member.name == "top"
            continue
        chunks = []
        while True:  # small reads, as the readers do
            piece = f.read(4096)
            if not piece:
                break
            chunks.append(piece)
        got[member.name] = b"".join(chunks)
        assert member.size == len(got[member.name])
    assert got == FILES


def test_unread_members_are_skipped_and_readinto_works():
    stream = TarStream(io.BytesIO(_tar(tarfile.PAX_FORMAT, FILES)), "t.tar")
    names = []
    for member in stream:
        names.append(member.name)
        if member.name == "top/\u00e9t\u00e9.txt":
            buf = bytearray(1000)
            assert stream.extractfile(member).readinto(buf) == 513 and buf[:513] == b"x" * 513
    assert names == ["top", *FILES]


@pytest.mark.parametrize("cut", [100, 512 + 1000, 512 * 3 + 40_000, 512 * 4])
def test_a_cut_stream_is_an_error_naming_the_archive(cut):
    data = _tar(tarfile.PAX_FORMAT, FILES)[:cut]
    stream = TarStream(io.BytesIO(data), "cut.tar")
    with pytest.raises(tarfile.ReadError, match="cut.tar"):
        for member in stream:
            f = stream.extractfile(member)
            while f is not None and f.read(65536):
                pass


def test_a_damaged_header_is_an_error():
    data = bytearray(_tar(tarfile.PAX_FORMAT, FILES))
    data[10] ^= 0xFF  # the first header's name: its checksum no longer matches
    with pytest.raises(tarfile.ReadError, match="bad tar header"):
        list(TarStream(io.BytesIO(bytes(data)), "bad.tar"))
