"""The stop inbox's hot path: a trigger's stop wakes the main thread (which stops the rings)
before the poster's thread sends the ``triggered`` event (the end-to-end event order is
checked in test_run.py)."""

from __future__ import annotations

import threading

from scoutfs_collect.core.stop import StopInbox, StopRequest


def test_the_main_thread_is_woken_before_the_triggered_event_is_sent():
    woken = threading.Event()
    saw_main_awake = []

    def on_first(request: StopRequest) -> None:
        # The triggered event (events file, socket, console) is slow: the main thread must
        # already be stopping the rings while it is sent.
        saw_main_awake.append(woken.wait(10))

    inbox = StopInbox(on_first, lambda r: None)
    poster = threading.Thread(target=inbox.post, args=(StopRequest(type="kmsg", reason="fencing"),))
    poster.start()
    try:
        assert inbox.wait(10), "the main thread was not woken by the trigger"
        assert inbox.pending() and inbox.first.reason == "fencing"
        woken.set()
        assert inbox.announced.wait(10)
    finally:
        woken.set()
        poster.join(10)
        inbox.close()
    assert saw_main_awake == [True]


def test_later_requests_are_counted_and_do_not_change_the_trigger():
    firsts, laters = [], []
    inbox = StopInbox(firsts.append, laters.append)
    try:
        inbox.post(StopRequest(type="kmsg", reason="fencing"))
        inbox.post(StopRequest(type="operator", reason="SIGINT", durable=True))
        assert [r.reason for r in firsts] == ["fencing"]
        assert [r.reason for r in laters] == ["SIGINT"]
        assert inbox.first.type == "kmsg" and inbox.later == 1 and inbox.urgent
    finally:
        inbox.close()

