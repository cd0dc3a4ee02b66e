"""The ftrace freeze self-test on this kernel, at RHEL's quiet console level (4 4 1 7) and
at a verbose one (7 4 1 7): a capture ended by a fencing line writes its archive, says which
freeze mode it used, keeps no event past the line when it froze in the kernel, and leaves the
top-level ring on (on kernels before ~5.19 a printk:console traceoff trigger fired from an
instance also stops the top level)."""

from __future__ import annotations

import pytest

from tests.targets.capture import run_until_fencing


@pytest.mark.parametrize("levels", ["4 4 1 7", "7 4 1 7"])
def test_freeze_self_test_leaves_top_level_tracing_on(cli, tmp_path, levels, printk_levels,
                                                      top_tracing_on, observe):
    printk_levels(levels)
    run = run_until_fencing(cli, tmp_path)
    top_after = top_tracing_on.read_text().strip()
    observe("top_tracing_on_after", top_after)
    assert run.code == 0, run.stderr
    ft = run.ftrace
    past = [line for line in run.records_after(f"{run.nonce} reconnect timed out") if run.nonce in line]
    seen = any(" console: " in line and f"{run.nonce} reconnect" in line for line in run.trace)
    observe("freeze_mode", ft["freeze_mode"])
    observe("self_test", ft["self_test"]["result"])
    # the log lines after the fencing one that the ring kept (None: the console event never
    # saw the fencing line at this console level)
    observe("events_past_fencing", len(past) if seen else None)
    # In-kernel only when the self-test line really stopped this instance, and then the
    # fencing line is the last thing it kept.
    assert (ft["freeze_mode"] == "in-kernel") == (ft["self_test"]["result"] == "passed"), ft
    if ft["freeze_mode"] == "in-kernel":
        assert ft["frozen_by"] == "in-kernel trigger", ft
        assert past == [], past
    assert top_after == "1", f"top-level tracing_on is {top_after} after the run (printk {levels})"
