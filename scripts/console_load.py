"""The attendant console under a store's worth of lanes: how fast a flagged item reaches the queue.

    python scripts/console_load.py [--lanes 50] [--seconds 30] [--per-lane-per-min 6] [--mqtt HOST:PORT]
                                   [--json out.json]

Starts Mosquitto on a free 127.0.0.1 port (unless --mqtt names a broker), the
console (store, MQTT ingest and web app under uvicorn, in this process) and
N simulated lanes, one MQTT client each, that publish flagged items the way a
lane does: a schema ``new`` envelope, then a JPEG of the scanning area (real
frames of box.mp4 / cup.mp4 when ../shared/data is there), each at random
times. A client logged in like the page follows the server-sent events and
fetches /api/state on each change, as the page does; an item counts as in
the queue when that state first lists it. A simulated attendant answers the
oldest items (Accept over HTTP with the CSRF token) so the queue stays the
size a store would let it grow to, and the answers go back to the lanes.

Prints the publish -> in-queue latency (p50 / p95 / max), items published and
seen, answers sent and acknowledged by the lanes, and messages dropped. The
browser's own rendering (a few ms) is not included; tests/console/test_browser.py
measures the whole way to the card in Chromium.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from checkout_cam.console.app import create_app  # noqa: E402
from checkout_cam.console.ingest import Ingest  # noqa: E402
from checkout_cam.console.service import Console  # noqa: E402
from checkout_cam.console.store import Store  # noqa: E402
from checkout_cam.console.users import hash_password  # noqa: E402
from checkout_cam.fleet.topics import Topics  # noqa: E402
from checkout_cam.schema import EventEnvelope, ItemRecord, RunIdentity  # noqa: E402

VIDEOS = REPO.parent / "shared" / "data" / "videos"
LABELS = ["Banana", "Granny-Smith", "Oatly-Oat-Milk", "Cucumber", "Red-Bell-Pepper", "Arla-Standard-Milk"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pictures() -> list[bytes]:
    out = []
    for name in ("box.mp4", "cup.mp4"):
        cap = cv2.VideoCapture(str(VIDEOS / name))
        for index in (60, 120, 200, 300):
            cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, frame = cap.read()
            if ok:
                frame = cv2.resize(frame, (320, 180), interpolation=cv2.INTER_AREA)
                out.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
        cap.release()
    if not out:   # no real data: a grey picture still has the size of one
        out.append(cv2.imencode(".jpg", np.full((180, 320, 3), 127, np.uint8))[1].tobytes())
    return out


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))]


class Lane:
    def __init__(self, lane_id: str, host: str, port: int):
        self.identity = RunIdentity(lane_id)
        self.topics = Topics(lane_id)
        self.answers = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"load-{lane_id}")
        self.client.will_set(self.topics.available, "offline", qos=1, retain=True)
        self.client.on_message = lambda c, u, m: setattr(self, "answers", self.answers + 1)
        self.client.connect(host, port)
        self.client.subscribe(self.topics.resolution, qos=1)
        self.client.loop_start()
        self.client.publish(self.topics.available, "online", qos=1, retain=True)

    def flag(self, jpeg: bytes, sent: dict[str, float]) -> None:
        ident, seq = self.identity.next_event()
        probs = sorted((random.random() for _ in range(3)), reverse=True)
        total = sum(probs) * 1.6
        top = [{"index": i, "label": LABELS[i], "prob": round(p / total, 4)}
               for i, p in zip(random.sample(range(len(LABELS)), 3), probs)]
        record = ItemRecord.from_dict({
            "type": "item", "id": ident, "seq": seq, **self.identity.as_dict(), "label": top[0]["label"],
            "index": top[0]["index"], "confidence": top[0]["prob"], "top": top, "review": True,
            "review_reasons": ["low_confidence"], "frame_start": seq * 100, "frame_end": seq * 100 + 30,
            "t_start": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "t_end": None, "results": 8,
            "source": "load", "model": {"name": "load", "sha256": None, "trained": True}, "policy": {}})
        sent[ident] = time.time()
        self.client.publish(self.topics.events, json.dumps(EventEnvelope("new", ident, seq, record).to_dict()), qos=1)
        self.client.publish(self.topics.review(ident), jpeg, qos=1)

    def stats(self) -> None:
        self.client.publish(self.topics.stats, json.dumps({"camera_fps": 30.0, "inference_fps": 14.0,
                                                           "mqtt": {"outbox_depth": 0}}), qos=1, retain=True)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lanes", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the lanes publish (default 30)")
    ap.add_argument("--per-lane-per-min", type=float, default=6.0,
                    help="flagged items per lane per minute (default 6: far more than a real lane)")
    ap.add_argument("--queue-target", type=int, default=20, help="the attendant answers down to this many")
    ap.add_argument("--mqtt", metavar="HOST:PORT", help="use this broker instead of starting Mosquitto")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="console-load-"))
    broker = None
    if args.mqtt:
        host, port = args.mqtt.rsplit(":", 1)[0], int(args.mqtt.rsplit(":", 1)[1])
    else:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        host, port = "127.0.0.1", free_port()
        (tmp / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                                            "max_queued_messages 100000\n")
        broker = subprocess.Popen([exe, "-c", str(tmp / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection((host, port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
    import uvicorn

    store = Store(tmp / "console")
    store.add_user("load", "attendant", hash_password("load-password"))
    ingest = Ingest(store, host, port, client_id="console-load").start()
    console = Console(store, publisher=ingest, name="load")
    http_port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(console, broker=ingest), host="127.0.0.1", port=http_port,
                                           log_level="warning", lifespan="off", timeout_graceful_shutdown=1))
    server.install_signal_handlers = lambda: None
    web = threading.Thread(target=server.run, daemon=True)
    web.start()
    ingest.connected.wait(10)
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{http_port}"
    http = httpx.Client(base_url=base, timeout=10)
    token = re.search(r'name="csrf" value="([^"]+)"', http.get("/login").text).group(1)
    http.post("/login", data={"name": "load", "password": "load-password", "csrf": token})
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', http.get("/").text).group(1)

    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = threading.Event()
    answered = [0]

    def follow() -> None:   # what the page does: on every change, fetch the state
        with httpx.Client(base_url=base, cookies=http.cookies, timeout=None) as c, c.stream("GET", "/api/stream") as r:
            for line in r.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("data:"):
                    state = c.get("/api/state").json()
                    now = time.time()
                    for q in state["queue"]:
                        seen.setdefault(q["id"], now)
                    queue = [q["id"] for q in state["queue"]]
                    for event_id in queue[:max(0, len(queue) - args.queue_target)]:
                        if c.post("/api/resolve", json={"event_id": event_id, "outcome": "accept"},
                                  headers={"X-CSRF-Token": csrf}).status_code == 200:
                            answered[0] += 1

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    jpegs = pictures()
    lanes = [Lane(f"lane{i + 1:02d}", host, port) for i in range(args.lanes)]
    for lane in lanes:
        lane.stats()
    rate = args.lanes * args.per_lane_per_min / 60.0
    print(f"{args.lanes} lanes, {rate:.1f} flagged items/s for {args.seconds:.0f} s; console on {base}, broker "
          f"{host}:{port}", flush=True)
    t_end = time.monotonic() + args.seconds
    while time.monotonic() < t_end:
        random.choice(lanes).flag(random.choice(jpegs), sent)
        time.sleep(random.expovariate(rate))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(i in seen for i in sent):
        time.sleep(0.1)
    time.sleep(1.0)
    stop.set()
    latencies = [seen[i] - sent[i] for i in sent if i in seen]
    store_answers = len(store.history(limit=1_000_000))
    acked = store_answers - len(store.unpublished())
    lane_answers = sum(lane.answers for lane in lanes)
    figures = {
        "lanes": args.lanes, "seconds": args.seconds, "items_published": len(sent), "items_seen": len(latencies),
        "p50_s": round(percentile(latencies, 50), 4) if latencies else None,
        "p95_s": round(percentile(latencies, 95), 4) if latencies else None,
        "max_s": round(max(latencies), 4) if latencies else None,
        "answers": store_answers, "answers_acked_by_broker": acked, "answers_received_by_lanes": lane_answers,
        "dropped": {k: v for k, v in store.counters().items() if k.startswith("dropped")},
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures) + "\n")
    for lane in lanes:
        lane.close()
    server.should_exit = True
    ingest.stop()
    web.join(5)
    store.close()
    if broker is not None:
        broker.terminate()
        broker.wait(5)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
