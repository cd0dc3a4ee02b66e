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
import sys
import threading
from typing import Any, Callable

import pytest

from scoutfs_collect import Target
from scoutfs_collect.builtin_plugins.triggers.peer_silence import PeerSilenceTrigger
from tests.support.conversation import KEEPIDLE, PORT, USER_TIMEOUT_MS, Conversation
from tests.support.helpers import make_plugin, wait_for
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
