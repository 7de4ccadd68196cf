"""Prometheus metrics of the engine, the lanes and the HTTP API, in one registry per app.

Engine timings are histograms fed by the engine after every model call; the
lane's figures are read from the status reader at scrape time (so a scrape
always sees the pipeline's own counters, never a copy that drifted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from checkout_cam.engine import CLASS_NAMES, BatchReport, InferenceEngine

if TYPE_CHECKING:
    from checkout_cam.web.lane import LaneReader

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: a batch-1 ResNet-18 call is 15-60 ms on a 2-core CPU; queueing can reach seconds under load.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30)


class _LaneCollector:
    """One family per figure, one sample per lane (label ``lane``)."""

    def __init__(self, lanes: "list[LaneReader]"):
        self.lanes = lanes

    def collect(self):
        counters = [(lane.lane_id, lane.counters()) for lane in self.lanes]

        def family(kind, name, doc, key, scale=1.0):
            m = kind(f"checkout_cam_{name}", doc, labels=["lane"])
            for lane_id, c in counters:
                m.add_metric([lane_id], float(c[key]) * scale)
            return m

        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        yield family(gauge, "camera_fps", "Frames per second read from the camera (last 2 s).", "camera_fps")
        yield family(gauge, "inference_fps", "Results per second computed by the model (last 2 s).", "inference_fps")
        yield family(gauge, "camera_online", "1 while the camera delivers frames, 0 while it is offline.",
                     "camera_online")
        yield family(gauge, "latency_p50_seconds", "Capture-to-result latency, median of recent results.",
                     "latency_p50_ms", 1 / 1000.0)
        yield family(counter, "dropped_frames", "Frames the live queue replaced before the model saw them.", "dropped")
        yield family(counter, "frames_processed", "Frames the lane's inference worker handled.", "processed")
        yield family(counter, "model_runs", "Lane frames the model ran on.", "model_runs")
        yield family(counter, "reused_results", "Lane frames that reused the last result (motion gating).", "reused")
        yield family(counter, "frame_errors", "Lane frames whose inference failed.", "errors")
        yield family(counter, "items", "Item events closed.", "items")
        yield family(counter, "flagged_items", "Item events flagged for cashier review.", "flagged")


class Metrics:
    def __init__(self, engine: InferenceEngine, lanes: "list[LaneReader] | None" = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("checkout_cam_http_requests", "HTTP requests by route and status.",
                                ["route", "method", "status"], registry=r)
        self.queue = Histogram("checkout_cam_inference_queue_seconds", "Time a submission waited for the "
                               "model (submission to the start of its call).", ["priority"],
                               buckets=LATENCY_BUCKETS, registry=r)
        self.model = Histogram("checkout_cam_inference_seconds", "Time of one model call.", ["priority"],
                               buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("checkout_cam_inference_batch_images", "Images per model call.", ["priority"],
                               buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64), registry=r)
        self.images = Counter("checkout_cam_inference_images", "Images classified by the engine.", ["priority"],
                              registry=r)
        self.rejected = Counter("checkout_cam_http_rejected_busy", "HTTP images refused because the "
                                "inference queue was full (503).", registry=r)
        for name in CLASS_NAMES.values():  # present from the first scrape, at 0
            for m in (self.queue, self.model, self.batch, self.images):
                m.labels(priority=name)
        if lanes:
            r.register(_LaneCollector(list(lanes)))
        engine.add_observer(self.observe)

    def observe(self, report: BatchReport) -> None:
        name = CLASS_NAMES[report.priority]
        self.model.labels(priority=name).observe(report.model_ms / 1000.0)
        self.batch.labels(priority=name).observe(report.images)
        self.images.labels(priority=name).inc(report.images)
        q = self.queue.labels(priority=name)
        for ms in report.queue_ms:
            q.observe(ms / 1000.0)

    def request(self, route: str, method: str, status: int) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
