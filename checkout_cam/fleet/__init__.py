"""The store around the lane: MQTT publishing through a durable outbox, and its topics.

topics.py (names), outbox.py (SQLite outbox), publisher.py (serve's sink and its drain thread),
connection.py (paho client setup), subscriber.py (`checkout-cam events`), review_image.py,
lane_stats.py. The pipeline never imports this package; serve wires the publisher in as a sink.
"""
