"""``scoutfs-collect stop --wait durable`` against a real capture on this kernel: the answer
comes once the data is on disk, and the archive records the operator's trigger and the ftrace
ring's raw pages."""

from __future__ import annotations

from tests.support.cli import finish
from tests.support.helpers import archive_of, extract, inspect, unique


def test_stop_wait_durable(cli, tmp_path):
    instance = unique("sc_durable")
    profile = cli.profile(f"""\
settings: {{compression: zstd, min_free_mb: 1}}
collectors:
  dmesg: {{}}
  ftrace: {{instance: {instance}, events: ["sched:sched_switch"], buffer_size_kb: 256, freeze_on: []}}
triggers:
  never: {{type: timer, after: 3600}}
""")
    proc = cli.start("--profile", str(profile), "--output-dir", str(cli.out), "--events-file",
                     str(cli.events), "127.0.0.1", "7001")
    cli.wait_event("armed", proc, timeout=180)
    result = cli.run("stop", "--wait", "durable", "--timeout", "240", "--reason", "target tier",
                     timeout=300)
    assert result.returncode == 0, result.stderr
    assert "durable" in {e["event"] for e in cli.event_list()}
    code, out, err = finish(proc, timeout=300)
    assert code == 0, err
    archive = archive_of(out)
    m = inspect(cli, archive)
    assert m["trigger"]["type"] == "operator" and m["trigger"]["reason"] == "target tier", m["trigger"]
    top = extract(archive, tmp_path / "x")
    assert any((top / "ftrace" / "raw").glob("cpu*")), sorted(p.name for p in (top / "ftrace").iterdir())
