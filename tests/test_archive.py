"""The archive writer and reader, checked against the system tar and zstd."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Dict, List

import psutil
import pytest

from scoutfs_collect.archive import read as inspect_archive
from scoutfs_collect.archive import write as archive

TOP = "scoutfs-collect.node1.20240501-120000Z"
SUFFIX = {"zstd": ".tar.zst", "xz": ".tar.xz", "gz": ".tar.gz"}
# xz at its default preset needs ~10 s for 20 MB of random bytes: level 0 keeps tests fast.
CASES = [("zstd", None), ("xz", 0), ("gz", None)]
MANIFEST = {
    "format": 1,
    "tool": {"name": "scoutfs-collect", "version": "0.1.0"},
    "host": {"hostname": "node1", "kernel": "6.18.0"},
    "target": {"ip": "10.0.0.1", "port": 7777},
    "times": {"started": 1714564800.0, "triggered": 1714564830.25, "finished": 1714564840.0},
    "trigger": {"name": "fence-line", "type": "kmsg", "time": 1714564830.25,
                "reason": "client 10.0.0.2:41000 reconnect timed out, fencing"},
    "plugins": {
        "ftrace": {"kind": "collector", "type": "ftrace", "status": "ok", "error": None,
                   "phases": {"start": 0.2, "stop": 0.01}, "window": {
                       "first": 1714564800.0, "last": 1714564830.2},
                   "files": [{"path": "trace.dat", "size": 20 << 20, "sha256": "00"}]},
        "tcpdump": {"kind": "collector", "type": "tcpdump", "status": "timeout",
                    "error": "stop did not finish in 5 s", "phases": {"stop": 5.0}},
    },
    "result": {"exit_status": 1, "problems": ["tcpdump: stop timed out"]},
}


def _children() -> List[psutil.Process]:
    return psutil.Process().children(recursive=True)


@pytest.fixture
def no_leftover_children():
    before = {p.pid for p in _children()}
    yield
    left = [p for p in _children() if p.pid not in before]
    for p in left:
        p.kill()
    assert not left, f"child processes left behind: {left}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    wd = tmp_path / "work" / TOP
    (wd / "ftrace" / "per_cpu" / "cpu1").mkdir(parents=True)
    (wd / "tcpdump").mkdir()
    (wd / "empty-dir").mkdir()
    (wd / "manifest.json").write_text(json.dumps(MANIFEST))
    (wd / "ftrace" / "trace.dat").write_bytes(os.urandom(20 << 20))
    (wd / "ftrace" / "per_cpu" / "cpu1" / "raw").write_bytes(b"\0" * 4096 + b"page" * 1000)
    (wd / "tcpdump" / "tcpdump.pcap0").write_bytes(b"\xd4\xc3\xb2\xa1" + b"x" * 10000)
    (wd / "tcpdump" / "empty.log").write_bytes(b"")
    (wd / "sysinfo.txt").write_text("uname: Linux\n" * 100)
    os.chmod(wd / "sysinfo.txt", 0o640)
    os.utime(wd / "sysinfo.txt", (1700000000, 1700000000))
    (wd / "link-to-passwd").symlink_to("/etc/passwd")
    (wd / "tcpdump" / "dangling").symlink_to("/nonexistent")
    os.mkfifo(wd / "fifo")
    (tmp_path / "out").mkdir()
    return wd


def _regular_files(root: Path) -> Dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def _tar(args: List[str], archive_path: Path, cwd: Path = None) -> str:
    comp = ["-I", "zstd"] if archive_path.name.endswith(".zst") else []
    done = subprocess.run(["tar", *comp, *args, str(archive_path)], cwd=cwd,
                          capture_output=True, text=True, check=True)
    return done.stdout


def _partials(out: Path) -> List[str]:
    return [p.name for p in out.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("compression,level", CASES)
def test_pack_round_trip_with_system_tar(workdir: Path, tmp_path: Path, compression, level,
                                         caplog, no_leftover_children):
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="scoutfs_collect.archive.write"):
        path = archive.pack(workdir, out, compression, level=level)

    assert path == out / (TOP + SUFFIX[compression])
    assert (path.stat().st_mode & 0o777) == 0o600
    assert os.listdir(out) == [path.name], "the temporary file is gone"
    names = _tar(["-tf"], path).splitlines()
    assert names[0] == f"{TOP}/manifest.json"
    assert all(n == f"{TOP}/" or n.startswith(f"{TOP}/") for n in names)
    assert names[1:] == sorted(names[1:], key=lambda n: n.rstrip("/").split("/"))
    for skipped in ("link-to-passwd", "fifo", "tcpdump/dangling"):
        assert f"{TOP}/{skipped}" not in names
        assert skipped.split("/")[-1] in caplog.text
    assert f"{TOP}/empty-dir/" in names
    assert all(" 0/0 " in line for line in _tar(["--numeric-owner", "-tvf"], path).splitlines())

    dest = tmp_path / "extract"
    dest.mkdir()
    _tar(["-xf"], path, cwd=dest)
    assert os.listdir(dest) == [TOP]
    want, got = _regular_files(workdir), _regular_files(dest / TOP)
    assert sorted(got) == sorted(want)
    for rel, src in want.items():
        assert got[rel].read_bytes() == src.read_bytes(), rel
        assert got[rel].stat().st_mode == src.stat().st_mode, rel
        assert int(got[rel].stat().st_mtime) == int(src.stat().st_mtime), rel

    assert inspect_archive.read_manifest(path) == MANIFEST
    members = dict(inspect_archive.list_members(path))
    assert members[f"{TOP}/ftrace/trace.dat"] == 20 << 20


def test_progress_tells_the_truth(workdir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(archive, "PROGRESS_INTERVAL", 0.0)  # report at every chunk
    calls = []
    archive.pack(workdir, tmp_path / "out", progress=lambda d, t: calls.append((d, t)))
    total = sum(p.stat().st_size for p in _regular_files(workdir).values())
    assert len(calls) > 20, "a 20 MB file is read in 1 MiB chunks"
    assert all(t == total for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (total, total)


def test_progress_is_throttled(workdir: Path, tmp_path: Path):
    calls = []
    started = time.monotonic()
    archive.pack(workdir, tmp_path / "out", "gz", progress=lambda d, t: calls.append((d, t)))
    elapsed = time.monotonic() - started
    assert calls[-1][0] == calls[-1][1]
    assert len(calls) <= elapsed * 10 + 2, f"{len(calls)} calls in {elapsed:.2f} s"


@pytest.mark.parametrize("compression,level", CASES)
@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError])
def test_interrupted_pack_leaves_no_archive(workdir: Path, tmp_path: Path, monkeypatch,
                                            compression, level, exc, no_leftover_children):
    monkeypatch.setattr(archive, "PROGRESS_INTERVAL", 0.0)
    seen = []

    def interrupt(done: int, total: int) -> None:
        seen.append(done)
        if len(seen) == 3:
            raise exc("simulated Ctrl-C")

    out = tmp_path / "out"
    with pytest.raises(exc):
        archive.pack(workdir, out, compression, progress=interrupt, level=level)
    assert 0 < seen[-1] < 20 << 20
    assert os.listdir(out) == []


def test_refuses_existing_archive(workdir: Path, tmp_path: Path):
    final = tmp_path / "out" / (TOP + ".tar.zst")
    final.write_bytes(b"earlier archive")
    with pytest.raises(FileExistsError):
        archive.pack(workdir, tmp_path / "out")
    assert final.read_bytes() == b"earlier archive"
    assert _partials(tmp_path / "out") == []


@pytest.mark.parametrize("target_exists", [True, False])
def test_refuses_planted_symlink(workdir: Path, tmp_path: Path, target_exists: bool):
    victim = tmp_path / "victim"
    if target_exists:
        victim.write_bytes(b"precious")
    final = tmp_path / "out" / (TOP + ".tar.gz")
    final.symlink_to(victim)
    with pytest.raises(FileExistsError):
        archive.pack(workdir, tmp_path / "out", "gz")
    assert final.is_symlink()
    assert victim.read_bytes() == b"precious" if target_exists else not victim.exists()
    assert _partials(tmp_path / "out") == []


def test_name_taken_while_packing_is_not_overwritten(workdir: Path, tmp_path: Path,
                                                     monkeypatch):
    """The final publish itself refuses to clobber (link, not rename)."""
    monkeypatch.setattr(archive, "PROGRESS_INTERVAL", 0.0)
    final = tmp_path / "out" / (TOP + ".tar.zst")

    def plant(done: int, total: int) -> None:
        if not final.exists():
            final.write_bytes(b"someone else's")

    with pytest.raises(FileExistsError):
        archive.pack(workdir, tmp_path / "out", progress=plant)
    assert final.read_bytes() == b"someone else's"
    assert _partials(tmp_path / "out") == []


def test_files_changing_while_packing(workdir: Path, tmp_path: Path, monkeypatch, caplog):
    """A collector still writing must not make the archive fail."""
    monkeypatch.setattr(archive, "PROGRESS_INTERVAL", 0.0)
    shrink, grow = workdir / "z-shrink", workdir / "z-grow"
    shrink.write_bytes(b"s" * 100000)
    grow.write_bytes(b"g" * 1000)

    def change(done: int, total: int) -> None:
        if shrink.stat().st_size == 100000:
            os.truncate(shrink, 10)
            with open(grow, "ab") as f:
                f.write(b"more")

    with caplog.at_level(logging.WARNING, logger="scoutfs_collect.archive.write"):
        path = archive.pack(workdir, tmp_path / "out", "gz", progress=change)
    with tarfile.open(path) as tar:
        assert tar.extractfile(f"{TOP}/z-shrink").read() == b"s" * 10 + b"\0" * 99990
        assert tar.extractfile(f"{TOP}/z-grow").read() == b"g" * 1000
    assert "z-shrink shrank" in caplog.text and "z-grow grew" in caplog.text


def test_compression_choices(workdir: Path, tmp_path: Path, monkeypatch):
    assert archive.available_compressors() == {"zstd": True, "xz": True, "gz": True}
    assert archive.compression_problem("zstd") is None
    assert "choose one of gz, xz, zstd" in archive.compression_problem("bzip2")
    with pytest.raises(ValueError, match="unknown compression"):
        archive.pack(workdir, tmp_path / "out", "bzip2")
    with pytest.raises(ValueError, match="out of range"):
        archive.pack(workdir, tmp_path / "out", "gz", level=12)
    monkeypatch.setenv("PATH", str(tmp_path))  # no zstd program on this PATH
    problem = archive.compression_problem("zstd")
    assert "apt-get install zstd" in problem and "settings.compression=xz" in problem
    assert archive.available_compressors()["zstd"] is False
    assert os.listdir(tmp_path / "out") == []


def test_sha256_files(workdir: Path):
    files = archive.sha256_files(workdir)
    paths = [f["path"] for f in files]
    assert paths == sorted(_regular_files(workdir), key=lambda p: p.split("/"))
    assert "link-to-passwd" not in paths and "fifo" not in paths
    for f in files:
        data = (workdir / f["path"]).read_bytes()
        assert f["size"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("compression", ["zstd", "xz", "gz"])
def test_read_manifest_stops_early_and_rejects_foreign(tmp_path: Path, compression,
                                                       no_leftover_children):
    wd = tmp_path / TOP
    wd.mkdir()
    (wd / "manifest.json").write_text(json.dumps(MANIFEST))
    (wd / "data").write_bytes(os.urandom(1 << 20))
    path = archive.pack(wd, tmp_path, compression)  # default levels
    assert inspect_archive.read_manifest(path) == MANIFEST
    # The manifest comes first: an archive cut in the middle (a failed copy) still yields it.
    cut = tmp_path / ("cut" + SUFFIX[compression])
    data = path.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=str(cut)):
        inspect_archive.list_members(cut)
    assert inspect_archive.read_manifest(cut)["trigger"]["name"] == "fence-line"

    other = tmp_path / "other"
    (other / "top").mkdir(parents=True)
    (other / "top" / "readme").write_text("not ours")
    foreign = archive.pack(other / "top", tmp_path, compression)
    with pytest.raises(ValueError, match=f"{foreign}: not a scoutfs-collect archive"):
        inspect_archive.read_manifest(foreign)
    junk = tmp_path / ("junk" + SUFFIX[compression])
    junk.write_bytes(b"\x1f\x8b" + os.urandom(1000) if compression == "gz" else os.urandom(1000))
    with pytest.raises(ValueError, match=str(junk)):
        inspect_archive.read_manifest(junk)


def test_render_shows_trigger_and_plugins(workdir: Path, tmp_path: Path):
    path = archive.pack(workdir, tmp_path / "out")
    text = inspect_archive.render(inspect_archive.read_manifest(path))
    assert "client 10.0.0.2:41000 reconnect timed out, fencing" in text
    assert "fence-line (type kmsg)" in text and "2024-05-01T12:00:30.250Z UTC" in text
    assert any(line.split()[:2] == ["ftrace", "ok"] for line in text.splitlines())
    assert any(line.split()[:2] == ["tcpdump", "TIMEOUT"] for line in text.splitlines())
    assert "error: stop did not finish in 5 s" in text
    assert "30.250 s before .. 0.050 s before the trigger" in text
    assert "ftrace/trace.dat" in text and "20.0 MiB" in text
    assert "node1" in text and "10.0.0.1:7777" in text and "0.1.0" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_render_partial_manifest():
    text = inspect_archive.render({"format": 1, "plugins": {"x": {"status": "failed",
                                                                   "error": "e" * 300}}})
    assert "none fired" in text and "FAILED" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "none fired" in inspect_archive.render({})


# The packing child reports its own peak (VmHWM: the high-water mark of the address space
# it got at exec) and that of the zstd it reaped. Not its RUSAGE_SELF ru_maxrss: Linux
# carries that across exec, and Python >= 3.10 starts children with vfork(), so it would
# report the peak of the pytest process that started it (seen at 264 MiB in CI).
PACK_300MB = """
import resource, sys
from pathlib import Path
from scoutfs_collect.archive import write as archive

def peak_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

archive.pack(Path(sys.argv[1]), Path(sys.argv[2]), "zstd")
packed = peak_kib()
archive.sha256_files(Path(sys.argv[1]))
print(packed, peak_kib(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_memory_stays_bounded_on_a_300mb_file(tmp_path: Path):
    wd = tmp_path / TOP
    wd.mkdir()
    (wd / "manifest.json").write_text(json.dumps(MANIFEST))
    chunk = os.urandom(1 << 20)
    with open(wd / "big", "wb") as f:
        for i in range(300):
            f.write(chunk[i:] + chunk[:i])  # not one repeated block: zstd must work
    proc = subprocess.run([sys.executable, "-c", PACK_300MB, str(wd), str(tmp_path)],
                          stdout=subprocess.PIPE, text=True, check=True)
    packed_kib, hashed_kib, zstd_kib = (int(x) for x in proc.stdout.split())
    assert (tmp_path / (TOP + ".tar.zst")).stat().st_size > 1 << 20
    assert packed_kib < 150 * 1024, f"peak RSS while packing: {packed_kib} KiB"
    assert hashed_kib < 150 * 1024, f"peak RSS while hashing: {hashed_kib} KiB"
    assert zstd_kib < 150 * 1024, f"peak RSS of zstd: {zstd_kib} KiB"


def test_python_xz_when_the_xz_program_is_missing(workdir: Path, tmp_path: Path, monkeypatch):
    with monkeypatch.context() as m:
        m.setenv("PATH", str(tmp_path))  # neither xz nor zstd here: python's lzma packs
        (workdir / "ftrace" / "trace.dat").write_bytes(os.urandom(1 << 20))  # 20 MiB took 39 s
        assert archive.available_compressors() == {"zstd": False, "xz": True, "gz": True}
        path = archive.pack(workdir, tmp_path / "out", "xz", level=0)
    assert _tar(["-tf"], path).splitlines()[0] == f"{TOP}/manifest.json"
    assert inspect_archive.read_manifest(path) == MANIFEST


def test_rename_without_replace(tmp_path: Path):
    """The publish path for filesystems without hard links (renameat2 RENAME_NOREPLACE)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_text("new")
    dst.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        archive._rename_noreplace(str(src), str(dst))
    assert dst.is_symlink() and src.read_text() == "new"
    dst.unlink()
    archive._rename_noreplace(str(src), str(dst))
    assert dst.read_text() == "new" and not src.exists()


def test_render_folds_many_small_files_of_a_subdirectory():
    files = [{"path": f"raw/events/e{i}/format", "size": 500} for i in range(20)]
    files += [{"path": "raw/cpu0", "size": 5 << 20}, {"path": "trace.dat", "size": 1 << 30}]
    text = inspect_archive.render({"format": 1, "plugins": {"ftrace": {"files": files}}})
    lines = text.splitlines()
    assert "Files (22 files, 1.0 GiB)" in lines
    assert any(ln.split() == ["ftrace/raw/...", "(20", "small", "files)", "9.8", "KiB"]
               for ln in lines)
    assert any(ln.split() == ["ftrace/raw/cpu0", "5.0", "MiB"] for ln in lines)
    assert not any("e3/format" in ln for ln in lines)


def test_inspect_members_lists_every_file_with_its_size(cli):
    profile = cli.profile("collectors:\n  m: {type: test-marker, text: members}\n"
                          "triggers:\n  t: {type: timer, after: 0.1}\n")
    run = cli.run("--plugin-dir", str(cli.plugin_dir()), "--profile", str(profile),
                  "--output-dir", str(cli.out), "127.0.0.1", "7030")
    assert run.returncode == 0, run.stderr
    archive = run.stdout.strip().splitlines()[-1].split(": ", 1)[1]
    result = cli.run("inspect", "--members", archive)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[-1]: int(line.split()[0])
            for line in result.stdout.splitlines() if line[:14].strip().isdigit()}
    top = Path(archive).name[: -len(".tar.zst")]
    marker = f"{top}/m/marker.txt"
    assert rows[marker] == len("members\n127.0.0.1:7030\nstart stop finalize\n")
    assert f"{top}/manifest.json" in rows
