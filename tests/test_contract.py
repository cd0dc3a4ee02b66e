"""The plugin contract of scoutfs_collect/plugin/api.py, one test per guarantee, through
the real CLI: which phases of an instance run, in which order, after one of them raised
or timed out, and that cleanup always runs exactly once, last."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

from tests.support.cli import finish

COLLECTOR_PHASES = ["prepare", "preflight", "start", "stop", "persist", "finalize", "cleanup"]
TRIGGER_PHASES = ["prepare", "preflight", "arm", "disarm", "cleanup"]


def entered(path: Path) -> Dict[str, List[str]]:
    """Instance name -> the phases it entered, in order (the test-faulty 'entered_file')."""
    seen: Dict[str, List[str]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        name, phase = line.split()
        seen.setdefault(name, []).append(phase)
    return seen


def run(cli, kind: str, fault: str, phase: str):
    log = cli.tmp / "entered.txt"
    opts = ("raise_in" if fault == "raise" else "hang_in") + f": [{phase}], entered_file: {log}"
    victim = (f"  victim: {{type: test-faulty, {opts}, timeout: 1}}\n" if kind == "collector"
              else f"  victim: {{type: test-faulty-trigger, {opts}, timeout: 1}}\n")
    witness = f"  witness: {{type: test-faulty, entered_file: {log}}}\n"
    profile = cli.profile(
        "settings: {min_free_mb: 1}\ncollectors:\n" + witness
        + (victim if kind == "collector" else "")
        + "triggers:\n  end: {type: timer, after: 0.3}\n"
        + (victim if kind == "trigger" else ""))
    code, _out, err = finish(cli.start_capture(profile), timeout=60)
    return code, err, entered(log)


# (kind, fault, phase) -> the phases the victim goes through, and the exit status
CASES = {
    ("collector", "raise", "prepare"): (COLLECTOR_PHASES[:2] + ["cleanup"], 2),
    ("collector", "raise", "preflight"): (COLLECTOR_PHASES[:2] + ["cleanup"], 2),
    ("collector", "raise", "start"): (COLLECTOR_PHASES[:3] + ["cleanup"], 1),
    ("collector", "hang", "start"): (COLLECTOR_PHASES[:3] + ["cleanup"], 1),
    ("collector", "raise", "stop"): (COLLECTOR_PHASES, 1),
    ("collector", "hang", "stop"): (COLLECTOR_PHASES[:4] + ["cleanup"], 1),
    ("collector", "raise", "persist"): (COLLECTOR_PHASES, 1),
    ("collector", "hang", "persist"): (COLLECTOR_PHASES[:5] + ["cleanup"], 1),
    ("collector", "raise", "finalize"): (COLLECTOR_PHASES, 1),
    # cleanup runs before the final manifest: its failure reaches it and the exit status
    ("collector", "raise", "cleanup"): (COLLECTOR_PHASES, 1),
    ("trigger", "raise", "arm"): (TRIGGER_PHASES[:3] + ["cleanup"], 1),
    ("trigger", "hang", "arm"): (TRIGGER_PHASES[:3] + ["cleanup"], 1),
    ("trigger", "raise", "disarm"): (TRIGGER_PHASES, 1),
}


@pytest.mark.parametrize("kind, fault, phase", list(CASES), ids=["-".join(c) for c in CASES])
def test_phases_after_a_fault_follow_the_contract(cli, kind, fault, phase):
    want, status = CASES[(kind, fault, phase)]
    code, err, seen = run(cli, kind, fault, phase)
    assert code == status, err
    assert seen["victim"] == want
    # the witness (a healthy collector) always goes through its whole life, once each
    witness = COLLECTOR_PHASES if status != 2 else COLLECTOR_PHASES[:2] + ["cleanup"]
    assert seen["witness"] == witness


def test_every_phase_runs_at_most_once_and_cleanup_exactly_once(cli):
    code, err, seen = run(cli, "collector", "raise", "finalize")
    assert code == 1, err
    for name, phases in seen.items():
        assert max(Counter(phases).values()) == 1, (name, phases)
        assert phases[-1] == "cleanup", (name, phases)


def test_prepare_runs_before_any_preflight_and_check_cleans_up(cli):
    log = cli.tmp / "entered.txt"
    profile = cli.profile(
        "collectors:\n"
        f"  a: {{type: test-faulty, entered_file: {log}}}\n"
        f"  b: {{type: test-faulty, entered_file: {log}}}\n"
        "triggers:\n  end: {type: timer, after: 1}\n")
    result = cli.run("check", "--plugin-dir", str(cli.plugin_dir()), "--profile", str(profile),
                     "--output-dir", str(cli.out), "127.0.0.1", "7001")
    assert result.returncode == 0, result.stderr
    order = [tuple(line.split()) for line in log.read_text().splitlines()]
    assert order == [("a", "prepare"), ("b", "prepare"), ("a", "preflight"), ("b", "preflight"),
                     ("a", "cleanup"), ("b", "cleanup")]
    assert list(cli.out.iterdir()) == []  # check writes nothing
