"""A paho-mqtt client set up from the ``mqtt`` settings: protocol, credentials, TLS, backoff.

Shared by the lane's publisher and the ``events`` subscriber, so both speak to
the broker the same way. paho-mqtt is the maintained Eclipse client: MQTT 3.1.1
and 5, TLS, keepalive, reconnect and QoS 1 retransmission are all in it, and
none of that is worth writing again.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from checkout_cam.errors import CheckoutCamError

logger = logging.getLogger(__name__)

# A persistent MQTT 5 session outlives a disconnect by this long (3.1.1 sessions have no expiry).
SESSION_EXPIRY_S = 7 * 24 * 3600


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int = 1883
    protocol: str = "3.1.1"
    username: str = ""
    password: str = ""
    password_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    keepalive_s: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0

    @classmethod
    def from_config(cls, m) -> "BrokerSettings":
        return cls(host=m.host, port=m.port, protocol=m.protocol, username=m.username, password=m.password,
                   password_file=m.password_file, tls_ca=m.tls_ca, tls_cert=m.tls_cert, tls_key=m.tls_key,
                   keepalive_s=m.keepalive_s, reconnect_min_s=m.reconnect_min_s, reconnect_max_s=m.reconnect_max_s)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" + (" (TLS)" if self.tls_ca else "")

    def secret(self) -> str | None:
        if self.password_file:
            try:
                lines = Path(self.password_file).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise CheckoutCamError(f"cannot read the MQTT password file {self.password_file} "
                                       f"(mqtt.password_file): {exc.strerror or exc}") from None
            return lines[0].strip() if lines else ""
        return self.password or None


def make_client(settings: BrokerSettings, client_id: str, *, persistent: bool) -> mqtt.Client:
    """A client not yet connected. ``persistent``: the broker keeps the session (and QoS 1 messages for
    its subscriptions) while the client is away."""
    v5 = settings.protocol == "5"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                         clean_session=None if v5 else not persistent)
    if settings.username:
        client.username_pw_set(settings.username, settings.secret())
    if settings.tls_ca:
        for key in ("tls_ca", "tls_cert", "tls_key"):
            path = getattr(settings, key)
            if path and not Path(path).is_file():
                raise CheckoutCamError(f"mqtt.{key}: file not found: {path}")
        try:
            client.tls_set(ca_certs=settings.tls_ca, certfile=settings.tls_cert or None,
                           keyfile=settings.tls_key or None, cert_reqs=ssl.CERT_REQUIRED)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise CheckoutCamError(f"mqtt.tls_ca/tls_cert/tls_key: cannot set up TLS: {exc}") from None
    client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)  # type: ignore[arg-type]
    return client


def connect_async(client: mqtt.Client, settings: BrokerSettings, *, persistent: bool) -> None:
    """Start connecting in the background (the client's loop retries until the broker answers)."""
    if settings.protocol == "5":
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = Properties(PacketTypes.CONNECT)
        if persistent:
            props.SessionExpiryInterval = SESSION_EXPIRY_S
        client.connect_async(settings.host, settings.port, settings.keepalive_s,
                             clean_start=not persistent, properties=props)
    else:
        client.connect_async(settings.host, settings.port, settings.keepalive_s)


def reason_text(reason_code) -> str:
    """paho's reason for a refused CONNACK or a disconnect, with what to check."""
    text = str(getattr(reason_code, "getName", lambda: reason_code)())
    value = getattr(reason_code, "value", None)
    if value in (4, 5, 134, 135) or "authori" in text.lower() or "password" in text.lower():
        text += " (check mqtt.username and mqtt.password / mqtt.password_file, and the broker's ACL)"
    return text
