"""A guest with more possible than online CPUs (-smp 2,maxcpus=8, as on hosts whose firmware
lists hot-pluggable CPUs): a capture with the ftrace collector ends on its trigger and writes
its archive."""

from __future__ import annotations

from pathlib import Path

from tests.targets.capture import run_until_fencing


def cpu_count(name: str) -> int:
    count = 0
    for part in Path(f"/sys/devices/system/cpu/{name}").read_text().strip().split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def test_capture_finishes_with_offline_possible_cpus(cli, tmp_path, observe):
    possible, online = cpu_count("possible"), cpu_count("online")
    observe("cpus_possible_online", [possible, online])
    assert possible > online, "this guest must be booted with -smp 2,maxcpus=8"
    run = run_until_fencing(cli, tmp_path, armed_timeout=240, finish_timeout=300)
    assert run.code == 0, run.stderr
    assert run.manifest["trigger"]["name"] == "fencing"
    assert run.manifest["plugins"]["ftrace"]["status"] == "ok", run.manifest["plugins"]["ftrace"]
    assert any("sched_switch:" in line for line in run.trace)
