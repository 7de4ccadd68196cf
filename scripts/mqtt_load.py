"""A store of 50 lanes on one local Mosquitto: throughput, end-to-end delay, outbox through an outage.

    python scripts/mqtt_load.py [--lanes 50] [--quick] [--json FILE]

Each simulated lane is a real MqttPublisher (its own SQLite outbox and paho
client); a driver thread makes item events at a realistic rate (one item per
lane every ~3 s: a `new`, then its `end` 0.5-2 s later) and commits them as
serve's sink does. A consumer (the `events` subscriber, persistent session)
is attached throughout. Phases:

1. normal rate (30 s; --quick 10 s): messages/s, end-to-end delay p50/p95
   (commit into the lane's outbox -> the consumer has it), outbox write p50/p95;
2. a burst: every lane closes 20 items at once;
3. the broker stopped (60 s; --quick 10 s) while the lanes go on: total outbox
   depth over time; then restarted: drain time (broker start -> every outbox
   empty and the consumer has every message) and the delay of the backlog.

Ends with lost / duplicate counts over the whole run (both should be 0 / few).
The broker listens on 127.0.0.1 only; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from checkout_cam.fleet.connection import BrokerSettings  # noqa: E402
from checkout_cam.fleet.publisher import MqttPublisher  # noqa: E402
from checkout_cam.fleet.subscriber import EventSubscriber  # noqa: E402
from checkout_cam.schema import ItemRecord, RunIdentity  # noqa: E402
from tests.helpers.mosquitto import Broker  # noqa: E402

ITEM_INTERVAL_S = 3.0
BURST_ITEMS = 20


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))]


def item(identity: RunIdentity, seq: int, closed: bool) -> ItemRecord:
    """An event-log line as serve writes it (same fields and about the same size)."""
    return ItemRecord(
        id=identity.event_id(seq), seq=seq, lane_id=identity.lane_id, run_id=identity.run_id,
        label="Granny Smith", index=12, confidence=0.71,
        top=[{"index": 12, "label": "Granny Smith", "prob": 0.71}, {"index": 40, "label": "Pink Lady", "prob": 0.2},
             {"index": 3, "label": "Pear", "prob": 0.05}],
        review=True, review_reasons=["low_margin"], frame_start=100 * seq, frame_end=100 * seq + 40,
        t_start="2026-12-01T15:00:00.000+00:00", t_end="2026-12-01T15:00:01.300+00:00" if closed else None,
        results=40, source="rtsp://camera", model={"name": "store", "sha256": "ab" * 32, "trained": True},
        policy={"min_confidence": 0.6, "min_margin": 0.15}, closed_by="empty" if closed else None)


class Store:
    def __init__(self, broker: Broker, n_lanes: int, workdir: Path):
        settings = BrokerSettings(host=broker.host, port=broker.port, reconnect_min_s=0.5, reconnect_max_s=2.0)
        self.sent: dict[str, float] = {}          # message key -> time.time() when committed
        self.received: dict[str, float] = {}
        self.duplicates = 0
        self.write_ms: list[float] = []
        self._lock = threading.Lock()
        self.lanes = []
        for i in range(n_lanes):
            identity = RunIdentity(f"lane{i:02d}")
            pub = MqttPublisher(settings, lane_id=identity.lane_id, state_dir=str(workdir / identity.lane_id),
                                record_of=lambda e: e, review_images=False, shutdown_drain_s=0.5)
            self.lanes.append([identity, pub, 0])
        self.consumer = EventSubscriber(settings, self._got, session="load-consumer")

    def _got(self, line: dict) -> None:
        key = f"{line['type']}:{line['id']}"
        now = time.time()
        with self._lock:
            if key in self.received:
                self.duplicates += 1
            else:
                self.received[key] = now

    def emit(self, lane: list, kind: str, seq: int) -> None:
        identity, pub, _ = lane
        key = f"{kind}:{identity.event_id(seq)}"
        t0 = time.perf_counter()
        with self._lock:
            self.sent[key] = time.time()
        pub.publish_envelope(kind, item(identity, seq, kind == "end"))
        if kind == "end":
            self.write_ms.append((time.perf_counter() - t0) * 1000)

    def new_seq(self, lane: list) -> int:
        lane[2] += 1
        return lane[2]

    def depth(self) -> int:
        return sum(pub.outbox.depth for _, pub, _ in self.lanes)

    def run_normal(self, seconds: float, stop_at: float | None = None) -> None:
        """Every lane: an item every ~ITEM_INTERVAL_S (exponential gaps), its end 0.5-2 s after its new."""
        rng = random.Random(1)
        end_t = time.monotonic() + seconds
        queue = [(time.monotonic() + rng.uniform(0, ITEM_INTERVAL_S), n, "new", 0) for n in range(len(self.lanes))]
        heapq.heapify(queue)
        while queue:
            t, n, kind, seq = heapq.heappop(queue)
            if kind == "new" and t > end_t:
                continue
            delay = t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            lane = self.lanes[n]
            if kind == "new":
                seq = self.new_seq(lane)
                self.emit(lane, "new", seq)
                heapq.heappush(queue, (t + rng.uniform(0.5, 2.0), n, "end", seq))
                heapq.heappush(queue, (t + rng.expovariate(1 / ITEM_INTERVAL_S), n, "new", 0))
            else:
                self.emit(lane, "end", seq)

    def burst(self, items: int) -> None:
        for lane in self.lanes:
            for _ in range(items):
                seq = self.new_seq(lane)
                self.emit(lane, "new", seq)
                self.emit(lane, "end", seq)

    def wait_all(self, timeout: float) -> float | None:
        """Seconds until every outbox is empty and the consumer has every message sent (None: timeout)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            with self._lock:
                done = len(self.received) >= len(self.sent) and all(k in self.received for k in self.sent)
            if done and self.depth() == 0:
                return time.monotonic() - t0
            time.sleep(0.02)
        return None

    def delays_ms(self, keys) -> list[float]:
        with self._lock:
            return [(self.received[k] - self.sent[k]) * 1000 for k in keys if k in self.received]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lanes", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="10 s phases and a 10 s outage instead of 30 s / 60 s")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    normal_s, outage_s = (10, 10) if args.quick else (30, 60)
    figures: dict = {"lanes": args.lanes, "normal_s": normal_s, "outage_s": outage_s}
    with tempfile.TemporaryDirectory(prefix="mqtt-load-") as tmp:
        # A store's broker keeps a persistent consumer's backlog: raise mosquitto's default cap of 1000.
        broker = Broker(Path(tmp), extra="max_queued_messages 1000000\nmax_inflight_messages 100\n").start()
        store = Store(broker, args.lanes, Path(tmp))
        try:
            with store.consumer:
                store.consumer.connected.wait(10)
                for _, pub, _ in store.lanes:
                    pub.start()
                for _, pub, _ in store.lanes:
                    pub.wait_connected(20)
                print(f"{args.lanes} lanes connected to mosquitto on 127.0.0.1:{broker.port}", flush=True)

                # 1. normal rate
                before = set(store.sent)
                t0 = time.monotonic()
                store.run_normal(normal_s)
                store.wait_all(30)
                keys = [k for k in store.sent if k not in before]
                span = time.monotonic() - t0
                d = store.delays_ms(keys)
                figures["normal"] = {"messages": len(keys), "messages_per_s": len(keys) / span,
                                     "delay_p50_ms": pct(d, 50), "delay_p95_ms": pct(d, 95),
                                     "outbox_write_p50_ms": pct(store.write_ms, 50),
                                     "outbox_write_p95_ms": pct(store.write_ms, 95), "writes": len(store.write_ms)}
                n = figures["normal"]
                print(f"normal rate: {n['messages']} messages in {span:.1f} s = {n['messages_per_s']:.1f} msg/s; "
                      f"end-to-end delay p50 {n['delay_p50_ms']:.1f} ms p95 {n['delay_p95_ms']:.1f} ms; outbox "
                      f"write on closing an event p50 {n['outbox_write_p50_ms']:.2f} ms p95 "
                      f"{n['outbox_write_p95_ms']:.2f} ms ({n['writes']} writes)", flush=True)

                # 2. burst
                before = set(store.sent)
                t0 = time.monotonic()
                store.burst(BURST_ITEMS)
                committed = time.monotonic() - t0
                took = store.wait_all(60)
                took = committed + took if took is not None else None   # from the burst's first commit
                keys = [k for k in store.sent if k not in before]
                d = store.delays_ms(keys)
                figures["burst"] = {"messages": len(keys), "commit_s": committed, "delivered_s": took,
                                    "messages_per_s": len(keys) / took if took else None,
                                    "delay_p50_ms": pct(d, 50), "delay_p95_ms": pct(d, 95)}
                print(f"burst: {len(keys)} messages committed in {committed:.2f} s, all delivered "
                      f"{took:.2f} s after the first ({len(keys) / took:.0f} msg/s); delay p50 {pct(d, 50):.0f} ms p95 "
                      f"{pct(d, 95):.0f} ms", flush=True)

                # 3. outage
                broker.stop()
                before = set(store.sent)
                samples = []
                t_out = time.monotonic()
                driver = threading.Thread(target=store.run_normal, args=(outage_s,), daemon=True)
                driver.start()
                while driver.is_alive():
                    samples.append((round(time.monotonic() - t_out, 1), store.depth()))
                    driver.join(5 if not args.quick else 1)
                samples.append((round(time.monotonic() - t_out, 1), store.depth()))
                backlog = store.depth()
                print("outbox depth while the broker is down (s, messages in all 50 outboxes): "
                      + ", ".join(f"{t:g}:{n}" for t, n in samples), flush=True)
                broker.start()
                drained = store.wait_all(120)
                keys = [k for k in store.sent if k not in before]
                d = store.delays_ms(keys)
                figures["outage"] = {"backlog": backlog, "depth_over_time": samples, "drain_s": drained,
                                     "backlog_delay_p95_ms": pct(d, 95)}
                print(f"broker back after {outage_s} s: backlog of {backlog} messages drained and delivered in "
                      f"{drained:.2f} s" if drained is not None else "backlog NOT drained within 120 s", flush=True)
            lost = [k for k in store.sent if k not in store.received]
            figures["total"] = {"sent": len(store.sent), "received": len(store.received), "lost": len(lost),
                                "duplicates_dropped": store.duplicates + store.consumer.duplicates}
            print(f"total: {len(store.sent)} messages sent, {len(lost)} lost, "
                  f"{figures['total']['duplicates_dropped']} duplicate(s) dropped by id", flush=True)
        finally:
            for _, pub, _ in store.lanes:
                pub.close()
            broker.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0 if not lost else 1


if __name__ == "__main__":
    sys.exit(main())
