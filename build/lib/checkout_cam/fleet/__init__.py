"""The store around the lane: MQTT publishing through a durable outbox, and its topics."""
