"""Parts of the cluster coordinator that need no hosts: the node's control channel, the
clock-offset estimate, %h in the node commands, and the bundle writer/reader."""

from __future__ import annotations

import os
import tarfile
from typing import List, Tuple

import pytest

from scoutfs_collect.archive import bundle
from scoutfs_collect.cluster import control, gather, remote
from scoutfs_collect.cluster.state import ClockOffset, ClusterRun, NodeState
from scoutfs_collect.core.stop import Ping, StopRequest, encode_command, parse_command


class _Runner:
    """Records request_stop() and events: what control.py calls on the real Runner."""

    def __init__(self) -> None:
        self.stops: List[StopRequest] = []
        self.events = self
        self.emitted: List[Tuple[str, dict]] = []

    def request_stop(self, request: StopRequest) -> None:
        self.stops.append(request)

    def emit(self, event: str, **fields) -> None:
        self.emitted.append((event, fields))


def test_control_stop_lines_stop_and_end_of_input_does_not():
    """The coordinator's own encoder writes the lines, as it does in a cluster run."""
    runner = _Runner()
    r, w = os.pipe()
    thread = control.start(runner, r)
    os.write(w, encode_command(Ping(sent=12.5)) + b"bogus line\n"
             + encode_command(StopRequest(type="peer", reason="th2 triggered freeze (kmsg): x")))
    os.close(w)  # the coordinator is gone
    thread.join(5)
    os.close(r)
    assert not thread.is_alive()
    assert [(s.type, s.reason) for s in runner.stops] == [("peer", "th2 triggered freeze (kmsg): x")]
    assert runner.emitted == [("pong", {"sent": 12.5})]


def test_stdin_and_the_control_socket_take_the_same_lines():
    """One parser for both channels: what the socket takes, stdin takes, and the other way."""
    line = b'{"command": "stop", "type": "fence-hook", "reason": "r", "durable": true}'
    assert parse_command(line) == StopRequest(type="fence-hook", reason="r", durable=True)
    runner = _Runner()
    control.handle_line(runner, line)
    assert runner.stops == [StopRequest(type="fence-hook", reason="r", durable=True)]


@pytest.mark.parametrize("line", [b"stop peer x", b'{"command": "halt"}', b'["stop"]',
                                  b'{"command": "stop", "type": "a b"}', b'{"command": "ping"}'])
def test_bad_control_lines_are_refused_with_a_reason(line):
    with pytest.raises(ValueError) as err:
        parse_command(line)
    assert str(err.value)
    runner = _Runner()
    control.handle_line(runner, line)
    assert runner.stops == [] and runner.emitted == []


def test_clock_offset_takes_the_shortest_round_trip():
    clock = ClockOffset()
    clock.event(node_time=100.0, received=100.5)  # one-way bound: offset >= -0.5
    assert clock.seconds == -0.5 and clock.error is None  # a bound: its error is unknown
    clock.pong(sent=10.0, node_time=12.1, received=10.2)  # rtt 0.2 -> offset 2.0
    clock.pong(sent=20.0, node_time=23.0, received=21.0)  # rtt 1.0 -> ignored
    assert abs(clock.seconds - 2.0) < 1e-9
    assert abs(clock.error - 0.1) < 1e-9  # half the round trip it came from
    node = NodeState("n1")
    node.clock = clock
    assert node.as_json(None, 0.0)["clock_error_ms"] == 100.0


def test_percent_h_becomes_the_node_name_or_its_hostname_in_tree_mode():
    args = remote.CaptureArgs("default", ["triggers.k.pattern=freeze-%h"], "/out/%h", "10.0.0.1", 7000)
    assert remote.run_command(args, "n7").endswith(
        "--set triggers.k.pattern=freeze-n7 --output-dir /out/n7 10.0.0.1 7000")
    assert '"$(hostname -s)"' in remote.run_command(args, None)
    assert list(remote.run_commands(args, ["n1", "n2"], tree=True)) == ["n[1-2]"]


def test_bundle_is_whole_and_inspect_reads_it(tmp_path):
    staging = tmp_path / "staging"
    (staging / "nodes" / "a1").mkdir(parents=True)
    (staging / "nodes" / "a1" / "x.tar.zst").write_bytes(b"data")
    run = ClusterRun(argv=["scoutfs-collect"], nodeset="a[1-2]",
                     nodes={"a1": NodeState("a1", status="ok", archive="nodes/a1/x.tar.zst"),
                            "a2": NodeState("a2", status="missing", error="unreachable")})
    path = gather.write_bundle(run, staging, tmp_path, "scoutfs-collect-cluster.20260101-000000Z")
    again = gather.write_bundle(run, staging, tmp_path, "scoutfs-collect-cluster.20260101-000000Z")
    assert path.name == "scoutfs-collect-cluster.20260101-000000Z.tar" and again != path
    assert not list(tmp_path.glob(".*partial"))
    with tarfile.open(path) as tar:
        assert tar.getnames()[0] == "scoutfs-collect-cluster.20260101-000000Z/cluster.json"
    assert bundle.is_bundle(path)
    doc, sizes = bundle.read_cluster(path)
    assert sizes["nodes/a1/x.tar.zst"] == 4
    text = bundle.render(doc, sizes)
    assert "a2" in text and "missing" in text and "unreachable" in text
