"""The durable outbox: order, acknowledgement, crash survival, the size bound, the lane's event ids."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from checkout_cam.errors import CheckoutCamError
from checkout_cam.fleet.outbox import Outbox
from tests.conftest import REPO


def test_messages_come_back_in_order_until_acknowledged(tmp_path):
    with Outbox(tmp_path) as box:
        rows = [box.add("t/events", f"m{i}".encode()) for i in range(5)]
        assert box.depth == 5 and box.bytes == 10
        got = box.pending(limit=3)
        assert [m.payload for m in got] == [b"m0", b"m1", b"m2"]
        assert [m.payload for m in box.pending(after_row=got[-1].row)] == [b"m3", b"m4"]
        assert box.ack([rows[1], rows[0]]) == 2
        assert box.ack([rows[0]]) == 0  # acknowledged twice (a duplicate PUBACK): nothing more to do
        assert [m.payload for m in box.pending()] == [b"m2", b"m3", b"m4"]
        assert box.depth == 3 and box.acked == 2
    with Outbox(tmp_path) as again:  # the next start sends what was not acknowledged, in order
        assert [m.payload for m in again.pending()] == [b"m2", b"m3", b"m4"]
        assert again.depth == 3 and again.bytes == 6


def test_a_sigkilled_writer_loses_nothing_it_committed(tmp_path):
    code = ("import sys, time; from checkout_cam.fleet.outbox import Outbox\n"
            "box = Outbox(sys.argv[1])\n"
            "for i in range(200):\n"
            "    box.add('t/events', b'%d' % i, event_id='lane1-20261201T000000Z-abcdef-%06d' % (i + 1))\n"
            "    print(i, flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        last = None
        for line in proc.stdout:
            last = int(line)
            if last == 199:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert last == 199
    with Outbox(tmp_path) as box:
        assert [int(m.payload) for m in box.pending(limit=1000)] == list(range(200))
        assert box.known_event("lane1-20261201T000000Z-abcdef-000200")
        assert not box.known_event("lane1-20261201T000000Z-abcdef-000201")


def test_a_full_outbox_drops_loudly_and_counts(tmp_path, caplog):
    with Outbox(tmp_path, max_bytes=100) as box, caplog.at_level(logging.ERROR):
        assert box.add("t", b"x" * 60) is not None
        assert box.add("t", b"y" * 60, event_id="lane1-20261201T000000Z-abcdef-000007") is None
        assert box.add("t", b"z" * 60) is None
        assert box.dropped == 2 and box.depth == 1
        assert "OUTBOX FULL" in caplog.text and "event log still has" in caplog.text
        assert caplog.text.count("OUTBOX FULL") == 1  # rate-limited, the counter carries on
        assert box.known_event("lane1-20261201T000000Z-abcdef-000007")  # still the lane's own event
        box.ack([m.row for m in box.pending()])
        assert box.add("t", b"w" * 60) is not None  # room again once the broker acknowledged


def test_resolutions_are_kept_once_and_read_newest_first(tmp_path):
    with Outbox(tmp_path) as box:
        a = json.dumps({"event_id": "a", "outcome": "accept"})
        assert box.remember_resolution("a", a)
        assert not box.remember_resolution("a", a)  # the same one redelivered
        time.sleep(0.01)
        assert box.remember_resolution("b", json.dumps({"event_id": "b"}))
        assert [e for e, _ in box.resolutions()] == ["b", "a"]
        box.prune()


def test_an_unwritable_state_dir_names_the_setting(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CheckoutCamError, match="mqtt.state_dir"):
        Outbox(blocker / "sub")
