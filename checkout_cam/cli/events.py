"""`checkout-cam events`: the store's item events from its MQTT broker, as JSON lines, each once."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

from checkout_cam.errors import CheckoutCamError

NAME = "events"
HELP = "print or append the store's item events from its MQTT broker as JSON lines, duplicates removed"
DESCRIPTION = """\
Subscribe to the lanes' events on the store's broker (checkout_cam/<lane>/events
and .../outage) and write each message once, as one JSON line: the envelope
{"type": "new"|"end", "id", "seq", "event"} or an outage record. Lanes publish
at least once, so a message repeated after a reconnect or a crash (same id) is
dropped. --log-lines writes only closed events, exactly as each lane's event
log holds them (compare them with `diff`). Without --follow it stops once no
message came for --wait seconds; with --session NAME the broker keeps what
arrives while you are away, so the next run picks up where this one stopped.
With --out FILE lines are appended, and ids already in the file are skipped.

examples:
  checkout-cam events --mqtt broker.store.lan --follow
  checkout-cam events --mqtt 127.0.0.1 --lane lane3 --log-lines --wait 5
  checkout-cam events --mqtt broker.store.lan --follow --session store-it --out store-events.jsonl
  checkout-cam events --mqtt broker --port 8883 --tls-ca ca.crt --username it --password-file it.pw --follow
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mqtt", metavar="HOST", required=True, help="the broker's host name or address")
    p.add_argument("--port", type=int, default=None, help="broker port (default 1883, 8883 with --tls-ca)")
    p.add_argument("--lane", metavar="L", default="+", help="only this lane's events (default: every lane)")
    p.add_argument("--follow", action="store_true", help="keep printing until Ctrl-C / SIGTERM")
    p.add_argument("--out", metavar="FILE", default=None, help="append the lines to FILE instead of stdout")
    p.add_argument("--log-lines", action="store_true",
                   help="only closed events, as the lanes' event logs hold them (no 'new' envelopes)")
    p.add_argument("--wait", type=float, default=2.0, metavar="S",
                   help="without --follow: stop after S seconds without a message (default 2)")
    p.add_argument("--session", metavar="NAME", default=None,
                   help="a persistent session (the MQTT client id): the broker keeps messages while you are away")
    p.add_argument("--prefix", default="checkout_cam", help="topic prefix (mqtt.topic_prefix of the lanes)")
    p.add_argument("--protocol", choices=("3.1.1", "5"), default="3.1.1", help="MQTT protocol version")
    p.add_argument("--username", default="", help="broker username")
    p.add_argument("--password-file", metavar="FILE", default="", help="file holding the broker password")
    p.add_argument("--tls-ca", metavar="FILE", default="", help="CA certificate: connect with TLS")


def run(args: argparse.Namespace) -> int:
    from checkout_cam.fleet.connection import BrokerSettings
    from checkout_cam.fleet.subscriber import EventSubscriber, keys_in_file

    port = args.port or (8883 if args.tls_ca else 1883)
    settings = BrokerSettings(host=args.mqtt, port=port, protocol=args.protocol, username=args.username,
                              password_file=args.password_file, tls_ca=args.tls_ca,
                              reconnect_min_s=0.5, reconnect_max_s=5.0)
    out_path = Path(args.out) if args.out else None
    seen = keys_in_file(out_path) if out_path else set()
    out = open(out_path, "a", encoding="utf-8") if out_path else sys.stdout
    last = [time.monotonic()]
    lock = threading.Lock()

    def write(line: dict) -> None:
        with lock:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            out.flush()   # a test, or `tail -f`, sees each line as it comes
            last[0] = time.monotonic()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with EventSubscriber(settings, write, lane=args.lane, prefix=args.prefix, session=args.session,
                             log_lines=args.log_lines, seen=seen) as sub:
            if not sub.connected.wait(10) and not args.follow:
                raise CheckoutCamError(sub.error or f"cannot reach the MQTT broker at {settings.address}")
            last[0] = time.monotonic()
            while not stop.wait(0.1):
                if not args.follow and time.monotonic() - last[0] >= args.wait:
                    break
            print(f"events: {sub.received} message(s), {sub.duplicates} duplicate(s) dropped, "
                  f"{sub.malformed} malformed", file=sys.stderr)
    finally:
        if out_path:
            out.close()
    return 0
