import threading

import pytest

from checkout_cam.frame_queue import END, Empty, FrameQueue, Stopped


def test_replay_keeps_every_item_in_order():
    q = FrameQueue("replay", maxsize=2)
    got = []

    def consume():
        while (item := q.get(timeout=5)) is not END:
            got.append(item)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(100):
        q.put(i)  # blocks while two are waiting
    q.put_end()
    t.join(5)
    assert got == list(range(100)) and q.dropped == 0


def test_live_keeps_only_the_newest_and_counts_drops():
    q = FrameQueue("live")
    for i in range(10):
        q.put(i)
    assert len(q) == 1 and q.dropped == 9
    assert q.get(timeout=0) == 9
    with pytest.raises(Empty):
        q.get(timeout=0.01)


def test_end_marker_is_never_dropped_or_blocked():
    live = FrameQueue("live")
    live.put(1)
    live.put_end()
    live.put(2)  # must not replace END
    assert [live.get(0), live.get(0), live.get(0)] == [1, END, 2]
    full = FrameQueue("replay", maxsize=1)
    full.put(1)
    full.put_end()  # would block with put()
    assert full.get(0) == 1 and full.get(0) is END


def test_stop_unblocks_a_full_put_and_an_empty_get():
    stop = threading.Event()
    q = FrameQueue("replay", maxsize=1, stop=stop, poll_s=0.01)
    q.put(0)
    errors = []

    def blocked_put():
        try:
            q.put(1)
        except Stopped:
            errors.append("put")

    t = threading.Thread(target=blocked_put)
    t.start()
    stop.set()
    t.join(2)
    assert not t.is_alive() and errors == ["put"]
    q.get(0)
    with pytest.raises(Stopped):
        q.get(timeout=1)


def test_rejects_unknown_mode():
    with pytest.raises(ValueError, match="live' or 'replay"):
        FrameQueue("fast")
