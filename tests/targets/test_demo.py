"""The demo profile end to end, as README's first command runs it: an archive is written and
``scoutfs-collect inspect`` reads it."""

from __future__ import annotations

from tests.support.helpers import archive_of, inspect


def test_demo_profile_writes_an_archive_inspect_reads(cli):
    result = cli.run("--profile", "demo", "--output-dir", str(cli.out), "127.0.0.1", "7000",
                     timeout=600)
    assert result.returncode == 0, result.stderr
    archive = archive_of(result.stdout)
    m = inspect(cli, archive)
    assert m["trigger"]["name"] in ("demo-fence", "demo-timer", "demo-line"), m["trigger"]
    failed = {name: p["status"] for name, p in m["plugins"].items() if p["status"] != "ok"}
    assert failed == {}, m["plugins"]
    text = cli.run("inspect", archive, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "ftrace" in text.stdout and "tcpdump" in text.stdout
