"""A real fence with the real scoutfs module, in one guest: the server mount (quorum slot 0)
and a client mount (no slot) of one filesystem, the client's connection cut, the server's
own fencing line and fence request, scoutfs-fenced (scoutfs's own script) running our
fence hook in front of a stand-in agent, and what each recorder kept:

- ``probe``: the fence-watch profile (the default's collectors, ended by the new fence
  request); on this kernel its ftrace ring is frozen by a function probe on
  scoutfs_fence_start, which the server calls right after logging the fencing line;
- ``user-space``: the same events with no in-kernel freeze, ended by the kmsg trigger;
- the old script's way (tests/targets/oldscript.py): a ring stopped by a 0.5 s poll;
- ``victim``: the client's recorder, which the fence hook asks over ssh before the agent;
- ``silence``: the client's peer-silence trigger.

The whole scenario runs once (module fixture); each test checks one part of it. Console
level 7 4 1 7 for the run, so that the printk:console event puts the fencing line itself
in each ring (the function probe does not depend on it: it fires on the call)."""

from __future__ import annotations

import contextlib
import re
from typing import Iterator

import pytest

from tests.targets.fence_run import AGENT, FenceRun, past_fencing, run_fence

PROBE = "scoutfs_fence_start"
HOOK = "scoutfs-collect fence-hook"


@pytest.fixture(scope="module")
def fence(tmp_path_factory, tracing_root) -> Iterator[FenceRun]:
    with contextlib.ExitStack() as stack:
        yield run_fence(stack, tmp_path_factory.mktemp("fence"), tracing_root)


def test_the_server_fences_the_cut_client(fence, observe):
    """The server's own fencing line, its fence request in sysfs, scoutfs-fenced servicing
    it and the server reclaiming the client's resources."""
    c = fence.cluster
    observe("fencing_lines", fence.fencing_lines)
    observe("fence_requests_not_serviced_in_time", fence.not_serviced)
    assert fence.fencing_lines == [ln for ln in fence.fencing_lines
                                   if f"scoutfs {c.server.fs_id}: client {c.ip}:{c.client.local_port} " in ln]
    assert list(fence.requests) == [c.client.rid], fence.requests
    req = fence.requests[c.client.rid]
    assert (req["reason"], req["ipv4_addr"]) == ("client_reconnect", c.ip), req
    serviced = f"server {c.server.fs_id} fencing rid {c.client.rid} at IP {c.ip} for client_reconnect"
    assert serviced in fence.fenced_log, fence.fenced_log
    assert fence.reclaimed, fence.fenced_log


def test_function_probe_freezes_the_ring_when_scoutfs_fences(fence, observe):
    """With the real module loaded the freeze is the probe on scoutfs_fence_start, and the
    kernel stops the ring when the server calls it: the task that logged the fencing line
    records nothing after it (it logs scoutfs_net_reconn_free_work_exit next). The
    top-level ring stays on, and the probe is gone with the run."""
    a = fence.probe
    assert a.code == 0, a.stderr
    ft = a.ftrace
    past = past_fencing(a.trace)
    observe("freeze_mode", ft["freeze_mode"])
    observe("fence_events_past_fencing", {"function-probe": None if past.line is None else len(past.scoutfs)})
    assert ft["freeze_mode"] == "function-probe", ft["freeze_why"]
    assert ft["freeze_probes"] == [PROBE]
    assert a.manifest["trigger"]["type"] == "scoutfs-fence", a.manifest["trigger"]
    assert ft["frozen_by"] == "in-kernel trigger", ft
    assert past.line is not None, a.trace[-5:]
    assert past.from_fencing_task == [], past.from_fencing_task
    armed = fence.enabled_while_armed
    assert [ln.split()[:2] for ln in armed] == [[PROBE, "[scoutfs]"]], armed
    assert fence.enabled_after == []
    assert fence.top_tracing_on == "1"
    assert not [n for n in fence.instances_after if n == ft["instance"]], fence.instances_after


def test_user_space_and_the_old_script_keep_records_past_the_fencing_line(fence, observe):
    """The same fence without the in-kernel freeze: our kmsg trigger stops the ring from user
    space, the old script's way polls every 0.5 s. How many scoutfs events each kept
    after the fencing line is the figure of the compatibility table (emulated guest:
    semantics, not milliseconds)."""
    a = fence.user_space
    assert a.code == 0, a.stderr
    us, old = past_fencing(a.trace), past_fencing(fence.old)
    figures = {"user-space": None if us.line is None else len(us.scoutfs),
               "old-script": None if old.line is None else len(old.scoutfs)}
    observe("fence_events_past_fencing", figures)
    observe("fencing_task_records_past", {"user-space": len(us.from_fencing_task),
                                          "old-script": len(old.from_fencing_task)})
    assert a.ftrace["freeze_mode"] == "user-space"
    assert a.ftrace["frozen_by"] == "stop"
    assert us.line is not None and old.line is not None
    assert fence.old_stopped


def test_fence_hook_asks_the_victim_then_runs_the_agent(fence, observe):
    """scoutfs-fenced runs `scoutfs-collect fence-hook` for the request: the hook asks the
    client over ssh to make its recorder durable (its log line names the request and how
    the victim answered) and runs the (stand-in) agent with the request's environment,
    which fences the client. Whether the victim is durable before the agent is a matter of
    time that an emulated guest does not have within scoutfs's 30 s (fence_run.py): when it
    answered in the grace, the order is checked; the answer is an observation."""
    c = fence.cluster
    hook_lines = [ln for ln in fence.fenced_log.splitlines() if ln.startswith(f"{HOOK}:")]
    observe("fence_hook", hook_lines)
    observe("victim_stop_over_ssh_s", round(fence.ssh_stop_s, 1))
    assert hook_lines, fence.fenced_log
    first = hook_lines[0]
    asked = re.search(rf"rid {c.client.rid} at {re.escape(c.ip)} \(reason client_reconnect\): "
                      r"victim (\S+) after [0-9.]+ s .*; running agent (\S+)", first)
    assert asked, first
    # durable, or answered not durable in time, or no answer in the grace: never a victim
    # the hook could not reach or where it found no recorder (our set-up would be wrong)
    assert asked.group(1) in ("durable", "not-durable", "no-answer"), first
    assert asked.group(2) == str(AGENT), first
    assert fence.agent.ran, fence.fenced_log
    assert fence.agent.env["SCOUTFS_FENCED_REQ_RID"] == c.client.rid
    assert fence.agent.env["SCOUTFS_FENCED_REQ_IP"] == c.ip
    if asked.group(1) == "durable":
        v = fence.victim
        assert v.manifest["trigger"]["type"] == "fence-hook", v.manifest["trigger"]
        assert fence.victim_durable is not None and fence.agent.started >= fence.victim_durable


def test_peer_silence_fires_on_the_client(fence, observe):
    """The client's own recorder ends by itself when the server stops answering it."""
    s = fence.silence
    observe("peer_silence", s.manifest.get("trigger") if s.manifest else s.stderr[-500:])
    assert s.code == 0, s.stderr
    assert s.manifest["trigger"]["type"] == "peer-silence", s.manifest["trigger"]
