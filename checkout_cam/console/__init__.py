"""The attendant console: one store service for all lanes.

``ingest`` subscribes to the lanes' MQTT topics and validates every message
into ``store`` (SQLite under the data folder); ``app`` serves the attendant's
page (login, lane grid, review queue, history) and turns answers into
resolutions, which ``ingest`` publishes back to the lanes, and into training
photos under ``<data>/corrections/<label>/``.
"""
