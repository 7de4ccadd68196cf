"""`checkout-cam console`: the attendant console for a store's lanes, and its users."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from checkout_cam.errors import CheckoutCamError

NAME = "console"
HELP = "the attendant console: one web page where a store's flagged items are resolved (MQTT + SQLite)"
DESCRIPTION = """\
A store service that subscribes to every lane's MQTT topics (checkout_cam/+/...),
keeps its state in SQLite under --data (events by id, the pictures of flagged
items, resolutions, users) and serves the attendant's page: the lane grid, the
review queue (live), Accept / Correct / No item, and the history with a CSV
download. Every answer is published to checkout_cam/<lane>/resolution (QoS 1,
with the event id and the attendant's name), and every Accept or Correct with
a picture saves it as DATA/corrections/<label>/<event_id>.jpg for finetune.

Everyone logs in: add users first (the password is asked on the terminal;
--password-stdin reads it from a pipe). Attendants resolve; viewers only look.
The page listens on 127.0.0.1 unless --http names another address, which is
allowed once users exist; use --tls-cert/--tls-key (or a TLS proxy) there.

examples:
  checkout-cam console add-user ann --role attendant --data /var/lib/checkout-cam/console
  checkout-cam console --mqtt broker.local --http 0.0.0.0:8090 --data /var/lib/checkout-cam/console \\
      --model models/store.pt --tls-cert console.crt --tls-key console.key
  checkout-cam console --data console-data          (broker on this machine, page on 127.0.0.1:8090)
  checkout-cam console list-users --data console-data
"""

DEFAULT_DATA = "console-data"


def _data_option(p: argparse.ArgumentParser, *, sub: bool = False) -> None:
    # On an action, SUPPRESS keeps `console --data X add-user ...` meaning X too.
    p.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS if sub else DEFAULT_DATA,
                   help=f"the console's folder: console.db, corrections/ (default ./{DEFAULT_DATA})")


def add_arguments(p: argparse.ArgumentParser) -> None:
    _data_option(p)
    p.add_argument("--mqtt", metavar="HOST[:PORT]", default="127.0.0.1:1883",
                   help="the store's MQTT broker (default 127.0.0.1:1883)")
    p.add_argument("--mqtt-username", metavar="NAME", help="broker user (password from $CHECKOUT_CAM_MQTT_PASSWORD "
                                                           "or --mqtt-password-file)")
    p.add_argument("--mqtt-password-file", metavar="FILE", help="file whose first line is the broker password")
    p.add_argument("--http", metavar="HOST:PORT", default="127.0.0.1:8090",
                   help="where the page listens (default 127.0.0.1:8090; another address needs users)")
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (and --tls-key)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")
    p.add_argument("--model", metavar="FILE", action="append", default=[],
                   help="a model artifact .pt whose labels the Correct search offers (repeatable; the lanes' "
                        "Top-k labels are always offered)")
    p.add_argument("--labels", metavar="FILE", help="a text file of product labels, one per line, for Correct")
    p.add_argument("--name", default="", help="this console's name, in every resolution (default console@HOST); "
                                              "also its MQTT client id, so two consoles need two names")
    p.add_argument("--keep-days", type=float, default=90.0,
                   help="forget unflagged events and answered items' pictures after this many days (default 90; "
                        "resolutions and corrections/ are kept)")
    p.add_argument("--session-hours", type=float, default=12.0, help="how long a login lasts (default 12)")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    add = sub.add_parser("add-user", help="add a user (or change one's password and role)",
                         description="Add a console user, or change an existing one's role and password (their "
                                     "open sessions end). The password is asked twice on the terminal.")
    add.add_argument("user", metavar="NAME")
    add.add_argument("--role", choices=("attendant", "viewer"), required=True,
                     help="attendant: resolves flagged items; viewer: sees the page, resolves nothing")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    _data_option(add, sub=True)
    rm = sub.add_parser("remove-user", help="remove a user (their sessions end at once)")
    rm.add_argument("user", metavar="NAME")
    _data_option(rm, sub=True)
    ls = sub.add_parser("list-users", help="list the users and their roles")
    _data_option(ls, sub=True)


def _host_port(text: str, default_port: int, option: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    host = host.strip("[]") or "127.0.0.1"
    try:
        value = int(port)
        if not 0 < value < 65536:
            raise ValueError
    except ValueError:
        raise CheckoutCamError(f"{option} {text!r}: expected HOST:PORT with a port 1-65535") from None
    return host, value


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CheckoutCamError("no terminal to ask the password on: use --password-stdin")
    first = getpass.getpass(f"password for {args.user}: ")
    if getpass.getpass("again: ") != first:
        raise CheckoutCamError("the two passwords differ")
    return first


def run(args: argparse.Namespace) -> int:
    from checkout_cam.console.store import Store
    from checkout_cam.console.users import UserError, check_name, check_role, hash_password

    data = Path(args.data)
    if args.action == "add-user":
        try:
            name = check_name(args.user)
            role = check_role(args.role)
            hashed = hash_password(_password(args))
        except UserError as exc:
            raise CheckoutCamError(str(exc)) from None
        with Store(data) as store:
            new = store.add_user(name, role, hashed)
        print(f"{'added' if new else 'updated'} {role} {name} in {data}")
        return 0
    if args.action == "remove-user":
        with Store(data) as store:
            if not store.remove_user(args.user):
                raise CheckoutCamError(f"no user {args.user!r} in {data}")
        print(f"removed {args.user} from {data}")
        return 0
    if args.action == "list-users":
        with Store(data) as store:
            users = store.users()
        for u in users:
            print(f"{u['name']}\t{u['role']}\tsince {u['created_at']}")
        if not users:
            print(f"no users in {data}; add one with: checkout-cam console add-user NAME --role attendant "
                  f"--data {data}", file=sys.stderr)
        return 0

    from checkout_cam.console.server import ConsoleOptions, serve_console
    from checkout_cam.console.service import read_labels, read_model_labels

    http_host, http_port = _host_port(args.http, 8090, "--http")
    mqtt_host, mqtt_port = _host_port(args.mqtt, 1883, "--mqtt")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CheckoutCamError("--tls-cert and --tls-key go together")
    password = os.environ.get("CHECKOUT_CAM_MQTT_PASSWORD")
    if args.mqtt_password_file:
        try:
            password = Path(args.mqtt_password_file).read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError) as exc:
            raise CheckoutCamError(f"--mqtt-password-file {args.mqtt_password_file}: cannot read a password "
                                   f"({exc})") from None
    labels: list[str] = []
    models: dict[str, list[str]] = {}
    for model in args.model:
        sha, names = read_model_labels(model)
        models[sha] = names
        labels += names
    if args.labels:
        try:
            labels += read_labels(None, args.labels)
        except OSError as exc:
            raise CheckoutCamError(f"--labels {args.labels}: {exc}") from None
    if args.verbose == 0:
        logging.getLogger("checkout_cam").setLevel(logging.INFO)   # a service logs what it does
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):   # both mean: finish cleanly
        signal.signal(sig, lambda *_: stop.set())
    opts = ConsoleOptions(data=data, http_host=http_host, http_port=http_port, mqtt_host=mqtt_host,
                          mqtt_port=mqtt_port, mqtt_username=args.mqtt_username, mqtt_password=password,
                          name=args.name, labels=tuple(dict.fromkeys(labels)), models=models, tls_cert=args.tls_cert,
                          tls_key=args.tls_key, keep_days=args.keep_days, session_hours=args.session_hours)
    return serve_console(opts, stop)
