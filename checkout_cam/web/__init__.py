"""The lane's web face: the photo page, the HTTP API, the live view and Prometheus metrics.

It reads the pipeline through small interfaces (``lane.LaneFeed``, a sink that keeps
recent events and the newest frame; ``lane.LaneReader``, a status reader; the
inference engine); the pipeline never imports this package. Importing it is
cheap: FastAPI loads only with ``web.app``.
"""
