"""Reusable test helpers: a fake systemd notify socket and a network camera stream."""
