"""The ``peer-silence`` trigger in namespace test hosts: it fires on the victim of a
partition (busy: within seconds; idle: after the keep-alives go unanswered) and never on
a healthy connection, idle or busy, watched for longer than its thresholds.

The trigger is armed inside host ``a`` (a thread that entered a's network namespace
opens its packet socket and runs its tcpdump and ip commands there); the target is the
server on ``b``. Timeouts scaled down as tests/support/conversation.py says (keepidle
3 s, keepintvl 1 s); the trigger's own options are its defaults.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import pytest

from scoutfs_collect import Target
from scoutfs_collect.builtin_plugins.triggers.peer_silence import PeerSilenceTrigger
from scoutfs_collect.demo import fixture
from tests.support import default_profile
from tests.support.cli import cli_argv, cli_env
from tests.support.conversation import KEEPIDLE, PEER, PORT, USER_TIMEOUT_MS, Conversation
from tests.support.helpers import make_plugin, unique, wait_for
from tests.support.netpair import NetHost, netpair  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux"),
              pytest.mark.once]  # the kernel's TCP between namespaces is the subject
CLONE_NEWNET = 0x40000000


def in_host(host: NetHost, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a thread that entered ``host``'s network namespace (what it opens and
    the commands it runs are in the host)."""
    out: dict = {}

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{host.ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            out["value"] = fn()
        except BaseException as exc:  # handed to the caller
            out["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def watch(netpair, tmp_path, armed, **conversation):  # noqa: F811
    """A conversation and a peer-silence trigger armed on its client (a)."""
    net = netpair()
    Conversation(net, None, **conversation)  # its processes end with the pair
    trigger = make_plugin(PeerSilenceTrigger, tmp_path / "ps", Target(net.b.address, PORT))
    assert in_host(net.a, trigger.preflight) == []
    fired = in_host(net.a, lambda: armed(trigger))
    assert trigger.ctx.details["interface"] == "eth0"
    return net, trigger, fired


def silence(reason: str) -> float:
    return float(re.search(r"nothing received for ([\d.]+) s", reason).group(1))


def test_fires_on_partition_of_a_busy_connection(netpair, tmp_path, armed):  # noqa: F811
    net, trigger, fired = watch(netpair, tmp_path, armed)
    wait_for(lambda: trigger.watcher.segments > 20, 20, "the conversation seen by the trigger")
    assert not fired.event.is_set()
    net.cut(net.a)
    busy = trigger.options.busy_silence
    wait_for(fired.event.is_set, busy + 10, "peer-silence to fire on the cut")
    (reason,) = fired.reasons
    assert f"→ {net.b.address}:{PORT} silent: our data unacknowledged" in reason
    assert silence(reason) >= busy


def test_fires_on_partition_of_an_idle_connection(netpair, tmp_path, armed):  # noqa: F811
    net, trigger, fired = watch(netpair, tmp_path, armed, interval=0)
    wait_for(lambda: trigger.watcher.segments >= 2, 2 * KEEPIDLE + 10, "a keep-alive exchange")
    net.cut(net.a)
    o = trigger.options
    wait_for(fired.event.is_set, KEEPIDLE + o.probes + o.probe_answer + 10, "peer-silence on an idle cut")
    (reason,) = fired.reasons
    assert f"{o.probes} keep-alive probes unanswered" in reason
    assert silence(reason) >= KEEPIDLE + o.probe_answer


def test_never_fires_on_a_healthy_idle_connection(netpair, tmp_path, armed):  # noqa: F811
    net, trigger, fired = watch(netpair, tmp_path, armed, interval=0)
    o = trigger.options
    # three of our keep-alives, each after keepidle: longer than keepidle + probes + answer
    wait_for(lambda: trigger.watcher.probes_seen >= 3, 3 * (KEEPIDLE + 2) + 10, "three keep-alive probes")
    assert 3 * KEEPIDLE > KEEPIDLE + o.probes + o.probe_answer
    assert not fired.event.is_set() and fired.reasons == []


def test_never_fires_on_a_healthy_busy_connection(netpair, tmp_path, armed):  # noqa: F811
    net, trigger, fired = watch(netpair, tmp_path, armed)
    # 10 messages a second, their replies and ACKs (at most 30 segments a second): 200
    # segments is over 2 * busy_silence
    wait_for(lambda: trigger.watcher.segments >= 200, 60, "200 segments of conversation")
    assert not fired.event.is_set() and fired.reasons == []


def test_never_fires_while_the_peer_kernel_answers_a_stopped_reader(netpair, tmp_path, armed):  # noqa: F811
    """The server stops reading (SIGSTOP) while we keep writing: its window closes, but
    its kernel answers our zero-window probes. That is a node stall on the other side,
    not silence. Seen here: our kernel still ends the connection once TCP_USER_TIMEOUT
    has passed in the zero window (no RST), and the client's write fails."""
    net, trigger, fired = watch(netpair, tmp_path, armed, size=16384, interval=0.01)
    server, client = ([p for p in net.procs if role in p.args][0] for role in ("server", "client"))
    server.send_signal(signal.SIGSTOP)
    wait_for(lambda: client.poll() is not None, USER_TIMEOUT_MS / 1000 + 30, "the client's write to fail")
    assert trigger.watcher.probes_seen >= 3  # zero-window probes, answered
    assert not fired.event.is_set() and fired.reasons == []


def test_preflight_names_bad_options_and_a_target_on_this_node(tmp_path):
    bad = make_plugin(PeerSilenceTrigger, tmp_path / "bad", Target("127.0.0.1", PORT),
                      busy_silence=0, probes=0, interface="nosuch0")
    messages = [p.message for p in bad.preflight() if p.fatal]
    assert "option 'busy_silence' must be more than 0, not 0" in messages
    assert "option 'probes' must be more than 0, not 0" in messages
    assert "no network interface 'nosuch0'" in messages
    local = make_plugin(PeerSilenceTrigger, tmp_path / "local", Target("127.0.0.1", PORT))
    (note,) = local.preflight()
    assert not note.fatal and "127.0.0.1 is this node" in note.message


def _peer(net, host: NetHost, role: str, peer: NetHost, *extra: str):
    proc = net.start(host, [sys.executable, PEER, role, host.address, peer.address, str(PORT),
                            "--user-timeout-ms", str(USER_TIMEOUT_MS), *extra],
                     stdout=subprocess.PIPE, text=True)
    return proc


def test_never_fires_on_the_server_when_a_client_goes_away(netpair, tmp_path, armed):  # noqa: F811
    """On the server (IP:PORT is its own address) only its own mount's connection, through
    lo, is watched: a client cut off (its connection dropped by the server's kernel once
    its keep-alives went unanswered) fires that client's trigger, never the server's."""
    net = netpair()
    server = _peer(net, net.b, "server", net.a, "--clients", "2")
    assert server.stdout.readline().strip() == "listening"
    _peer(net, net.a, "client", net.b)  # a client node
    _peer(net, net.b, "client", net.b)  # the server node's own mount
    assert sorted(server.stdout.readline().split()[1] for _ in range(2)) == [net.a.address, net.b.address]
    on_server = make_plugin(PeerSilenceTrigger, tmp_path / "srv", Target(net.b.address, PORT))
    (note,) = in_host(net.b, on_server.preflight)
    assert not note.fatal and "is this node (the server)" in note.message
    on_client = make_plugin(PeerSilenceTrigger, tmp_path / "cli", Target(net.b.address, PORT))
    server_fired = in_host(net.b, lambda: armed(on_server))
    client_fired = in_host(net.a, lambda: armed(on_client))
    assert on_server.ctx.details["interface"] == "lo"
    wait_for(lambda: on_server.watcher.segments > 20, 20, "the server's own connection seen")
    net.cut(net.a)
    wait_for(client_fired.event.is_set, on_client.options.busy_silence + 10, "the client's trigger")
    established = ["ss", "-Htn", "state", "established", f"( sport = :{PORT} )", "dst", net.a.address]
    wait_for(lambda: net.run(net.b, established).stdout.strip() == "", USER_TIMEOUT_MS / 1000 + 20,
             "the server's kernel to drop the cut client's connection")
    seen = on_server.watcher.segments
    wait_for(lambda: on_server.watcher.segments > seen + 20, 20, "the server's own connection still seen")
    assert {c.split(":")[0] for c in on_server.watcher.conns} == {net.b.address}  # its own mount's
    assert not server_fired.event.is_set() and server_fired.reasons == []


def test_never_fires_on_a_connection_the_server_never_answered(netpair, tmp_path, armed):  # noqa: F811
    """A client whose SYNs go unanswered (the server's node unreachable when it mounts)
    has no connection yet: that is not silence, however long a SYN waits for the next
    (1, 2, 4 s...: a's tcp_syn_linear_timeouts, which Linux >= 6.5 has, set to 0 so the
    first SYNs are not 1 s apart). b's address is a permanent neighbour of a, as behind a
    router: an unanswered ARP would send no SYN at all."""
    net = netpair()
    net.run(net.a, ["sysctl", "-qw", "net.ipv4.tcp_syn_linear_timeouts=0"])  # a's own namespace
    mac = re.search(r"link/ether (\S+)", net.run(net.b, ["ip", "link", "show", "eth0"]).stdout).group(1)
    done = net.run(net.a, ["ip", "neigh", "replace", net.b.address, "lladdr", mac, "dev", "eth0",
                           "nud", "permanent"])
    assert done.returncode == 0, done.stderr
    trigger = make_plugin(PeerSilenceTrigger, tmp_path / "ps", Target(net.b.address, PORT),
                          busy_silence=1.2)
    fired = in_host(net.a, lambda: armed(trigger))
    net.cut(net.a)
    _peer(net, net.a, "client", net.b)
    seen = {"count": 0, "at": time.monotonic(), "gaps": []}

    def a_syn_waited_past_busy_silence() -> bool:
        count, now = trigger.watcher.segments, time.monotonic()
        if count != seen["count"]:
            if seen["count"]:
                seen["gaps"].append(now - seen["at"])
            seen.update(count=count, at=now)
        return fired.event.is_set() or any(gap > trigger.options.busy_silence + 0.5 for gap in seen["gaps"])

    wait_for(a_syn_waited_past_busy_silence, 30, "a SYN unanswered for longer than busy_silence")
    assert not fired.event.is_set() and fired.reasons == []
    assert [c.connecting for c in trigger.watcher.conns.values()] == [True]


def _tun(net, host: NetHost) -> str:
    """A tun interface (no link header, like IPoIB not Ethernet) in ``host`` through which
    10.235.0.2 is routed; the address it routes."""
    for argv in (["ip", "tuntap", "add", "dev", "tun0", "mode", "tun"],
                 ["ip", "addr", "add", "10.235.0.1", "peer", "10.235.0.2", "dev", "tun0"],
                 ["ip", "link", "set", "tun0", "up"]):
        done = net.run(host, argv)
        assert done.returncode == 0, done.stderr
    return "10.235.0.2"


def test_not_watching_a_target_behind_a_non_ethernet_interface(netpair, tmp_path, armed):  # noqa: F811
    """Where IP:PORT is routed through an interface without Ethernet frames (IPoIB on a
    real cluster; a tun device here) the trigger does not watch, and says so in a note:
    the default profile's preflight does not fail there. Named explicitly, such an
    interface is an error."""
    net = netpair()
    ip = _tun(net, net.a)
    trigger = make_plugin(PeerSilenceTrigger, tmp_path / "ps", Target(ip, PORT))
    (note,) = in_host(net.a, trigger.preflight)
    assert not note.fatal
    assert note.message.startswith(f"{ip} is routed through tun0, which is not Ethernet-like (")
    assert "type 65534" in note.message and "peer-silence does not watch it" in note.message
    fired = in_host(net.a, lambda: armed(trigger))
    assert trigger.ctx.details == {"interface": "tun0", "not_watching": note.message}
    assert not hasattr(trigger, "_thread") and not fired.event.is_set()
    named = make_plugin(PeerSilenceTrigger, tmp_path / "named", Target(ip, PORT), interface="tun0")
    (error,) = in_host(net.a, named.preflight)
    assert error.fatal and "interface tun0 is not Ethernet-like" in error.message
    # The whole default profile passes its preflight there, with the note.
    sysfs = tmp_path / "sysfs"
    fixture.build(sysfs)
    out = tmp_path / "out"
    out.mkdir()
    check = subprocess.run(
        [*net.a.enter(), *cli_argv("check", "--profile", "default", "--output-dir", out,
                                   *default_profile.set_args(sysfs, unique("sfcps"), unique("tag")),
                                   "--set", "collectors.tcpdump.heartbeat_timeout=0", ip, PORT)],
        capture_output=True, text=True, env=cli_env(tmp_path), cwd=tmp_path, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert note.message in " ".join((check.stdout + check.stderr).split())
