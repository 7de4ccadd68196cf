import pytest

from checkout_cam.fleet.topics import Topics, parse, store_filter


def test_topics_of_a_lane_and_their_parse():
    t = Topics("lane3")
    assert t.events == "checkout_cam/lane3/events"
    assert t.available == "checkout_cam/lane3/available"
    assert parse(t.review("lane3-x-000001")) == ("lane3", "review", "lane3-x-000001")
    assert parse(t.resolution) == ("lane3", "resolution", None)
    assert parse("other/lane3/events") is None
    assert parse("checkout_cam/lane3/unknown") is None
    assert store_filter("events") == "checkout_cam/+/events"
    assert store_filter("review") == "checkout_cam/+/review/+"


def test_bad_prefix_and_lane_are_refused():
    with pytest.raises(ValueError, match="prefix"):
        Topics("lane3", prefix="a/#")
    with pytest.raises(ValueError, match="lane_id"):
        Topics("lane/3")
