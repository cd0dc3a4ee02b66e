"""scoutfs_collect.system.kernel_log and the kmsg trigger, on the real /dev/kmsg."""

from __future__ import annotations

import re
import threading
import time
from typing import List

import pytest

from scoutfs_collect import Wakeup
from scoutfs_collect.builtin_plugins.triggers.kmsg import KmsgTrigger
from scoutfs_collect.system.kernel_log import (
    EpochClock,
    KmsgFollower,
    KmsgReader,
    KmsgRecord,
    SeqTracker,
    follow,
    parse_record,
    parse_stream,
    unescape,
)
from tests.support.helpers import kmsg_write, make_plugin, unique, wait_for

# --- parsing -----------------------------------------------------------------------------

def test_parse_record_with_fields_and_escapes():
    raw = (b"3,1234,5678901,-,caller=T42;scoutfs f.1.r.2 error: a\\x5cb \\xc3\\xa9\\x0anext\n"
           b" SUBSYSTEM=block\n DEVICE=b8:0\n")
    r = parse_record(raw)
    assert (r.seq, r.usec, r.facility, r.level, r.level_name) == (1234, 5678901, 0, 3, "err")
    assert r.flags == "-,caller=T42"
    assert r.text == "scoutfs f.1.r.2 error: a\\b \u00e9\nnext"
    assert r.fields == {"SUBSYSTEM": "block", "DEVICE": "b8:0"}
    assert r.raw == raw


def test_facility_and_level_from_pri():
    r = parse_record(b"30,1,2,-;x\n")  # daemon.info
    assert (r.facility, r.level, r.facility_name, r.level_name) == (3, 6, "daemon", "info")


@pytest.mark.parametrize("garbage", [
    b"", b"no semicolon here\n", b"6,1,2;too few fields\n", b"six,1,2,-;not numbers\n",
    b"6,-1,2,-;negative\n", b"6,1,2,-;text\nbad continuation\n",
])
def test_garbage_record_is_rejected(garbage):
    with pytest.raises(ValueError):
        parse_record(garbage)


def test_parse_stream_skips_garbage_between_records(caplog):
    data = b"6,10,100,-;first\n SUB=x\nthis is garbage\n6,11,200,-;second\n6,12,30"
    records = list(parse_stream(data, "test"))
    assert [r.text for r in records] == ["first", "second"]
    assert records[0].fields == {"SUB": "x"}
    assert "skipped a bad record" in caplog.text


def test_unescape_invalid_utf8_is_replaced():
    assert unescape(b"a\\xffb") == "a\ufffdb"


def test_seq_tracker_counts_gaps():
    t = SeqTracker()
    for seq in (5, 6, 9, 10, 20):
        t.see(seq)
    assert [(g.first, g.count) for g in t.gaps] == [(7, 2), (11, 9)]
    assert t.lost == 11
    assert "2 kernel log records lost (seq 7..8)" in t.gaps[0].describe()


# --- the real device ---------------------------------------------------------------------

@pytest.fixture
def reader_from_end():
    reader = KmsgReader(from_end=True)
    yield reader
    reader.close()


def mine(records: List[KmsgRecord], nonce: str) -> List[KmsgRecord]:
    return [r for r in records if nonce in r.text]


def test_reader_decodes_real_lines(reader_from_end):
    nonce = unique("kmsgtest")
    kmsg_write(f"{nonce} plain")
    kmsg_write(f"{nonce} back\\slash \u00e9", level=3)
    records: List[KmsgRecord] = []
    wait_for(lambda: records.extend(mine(reader_from_end.read_available(), nonce))
             or len(records) >= 2, 2, "both lines")
    assert [(r.level, r.facility, r.text) for r in records] == [
        (6, 1, f"{nonce} plain"), (3, 1, f"{nonce} back\\slash \u00e9")]
    assert records[1].seq == records[0].seq + 1
    t0 = time.monotonic()
    assert mine(reader_from_end.read_available(), nonce) == []  # EAGAIN: no blocking
    assert time.monotonic() - t0 < 0.1


def test_seek_end_skips_old_lines_and_start_reads_them():
    nonce = unique("kmsgold")
    kmsg_write(f"{nonce} written before open")
    end = KmsgReader(from_end=True)
    start = KmsgReader()
    try:
        kmsg_write(f"{nonce} after")
        new = wait_for(lambda: mine(end.read_available(), nonce), 2, "new line")
        assert [r.text for r in new] == [f"{nonce} after"]
        whole = mine(start.read_available(), nonce)
        assert [r.text for r in whole] == [f"{nonce} written before open", f"{nonce} after"]
        assert start.stats()["lost"] == 0
    finally:
        end.close()
        start.close()


def test_epoch_clock_matches_wall_clock(reader_from_end):
    clock = EpochClock.measure()
    nonce = unique("kmsgclock")
    before = time.time()
    kmsg_write(nonce)
    after = time.time()
    (record,) = wait_for(lambda: mine(reader_from_end.read_available(), nonce), 2, "line")
    assert before - 0.05 < clock.epoch(record.usec) < after + 0.05


def test_follow_wakes_on_new_line_and_stops_on_wakeup(reader_from_end):
    nonce = unique("kmsgfollow")
    seen: List[KmsgRecord] = []
    wakeup = Wakeup()
    thread = threading.Thread(target=follow, args=(reader_from_end, wakeup,
                                                   lambda rs: seen.extend(rs) and False))
    thread.start()
    try:
        kmsg_write(nonce)
        wait_for(lambda: mine(seen, nonce), 2, "followed line")
    finally:
        wakeup.set()
        thread.join(2)
        wakeup.close()
    assert not thread.is_alive()


def test_follower_stop_drains_the_last_line():
    reader = KmsgReader(from_end=True)
    seen: List[KmsgRecord] = []
    errors: List[str] = []
    follower = KmsgFollower(reader, seen.extend, errors.append)
    follower.start()
    nonce = unique("kmsgdrain")
    try:
        kmsg_write(f"{nonce} last line")  # then stop at once: it must still be read
    finally:
        assert follower.stop(timeout=10)  # False only if the thread hung
        reader.close()
    assert [r.text for r in mine(seen, nonce)] == [f"{nonce} last line"]
    assert errors == []


# --- the kmsg trigger --------------------------------------------------------------------

@pytest.fixture
def arm_kmsg(tmp_path, armed):
    """arm_kmsg(**options) -> (trigger, Fired): a kmsg trigger that passed preflight, armed
    through the shared ``armed`` fixture (always disarmed afterwards)."""

    def arm(**values):
        trigger = make_plugin(KmsgTrigger, tmp_path, **values)
        assert trigger.preflight() == []
        return trigger, armed(trigger)

    return arm


def test_trigger_fires_on_match_only_and_not_on_old_lines(arm_kmsg):
    nonce = unique("kmsgtrig")
    # The line before arm matches too: only reading from the end keeps it from firing.
    kmsg_write(f"client 10.0.0.1:7000 {nonce} reconnect timed out, fencing")
    trigger, fired = arm_kmsg(pattern=f"client .* {nonce} reconnect timed out, fencing$")
    kmsg_write(f"client 10.0.0.1:7000 {nonce} reconnect ok")  # no match
    t0 = time.monotonic()
    kmsg_write(f"client 10.0.0.2:7000 {nonce} reconnect timed out, fencing")
    assert fired.event.wait(2)
    latency = time.monotonic() - t0
    assert fired.reasons == [f"client 10.0.0.2:7000 {nonce} reconnect timed out, fencing"]
    assert trigger.ctx.details["matched"]["level"] == 6
    assert latency < 0.5


def test_trigger_level_max_filters(arm_kmsg):
    nonce = unique("kmsglevel")
    _, fired = arm_kmsg(pattern=nonce, level_max=3)
    kmsg_write(f"{nonce} info", level=6)
    kmsg_write(f"{nonce} error", level=3)
    assert fired.event.wait(2)
    assert fired.reasons == [f"{nonce} error"]


def test_default_pattern_matches_scoutfs_lines(tmp_path):
    trigger = make_plugin(KmsgTrigger, tmp_path)
    regex = re.compile(trigger.options.pattern)
    assert regex.search("scoutfs f.2c5a1b.r.0e11f8: client 10.1.2.3:42 reconnect timed out, fencing")
    assert regex.search("scoutfs f.2c5a1b.r.0e11f8: server closing 10.1.2.3:7000 -> 10.1.2.4:55")
    assert not regex.search("scoutfs f.2c5a1b.r.0e11f8: server starting at 10.1.2.3:7000")


def test_bad_regex_is_a_preflight_problem(tmp_path):
    problems = make_plugin(KmsgTrigger, tmp_path, pattern="client (", level_max=9).preflight()
    messages = [p.message for p in problems]
    assert any("option 'pattern'" in m and "'client ('" in m and "missing )" in m for m in messages)
    assert any("level_max" in m for m in messages)
