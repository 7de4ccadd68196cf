"""Console users: roles, salted scrypt password hashes, and the failed-login limiter.

Hash string: ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``, so the cost can be
raised later without breaking old entries. n=2**14, r=8 (16 MiB, about 50 ms on
one core): slow enough that a stolen database is expensive to guess through,
fast enough for a handheld's login. The standard library's ``hashlib.scrypt``
is all it needs.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import deque

ROLES = ("attendant", "viewer")   # attendants resolve items; viewers only look
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8

_N, _R, _P = 2 ** 14, 8, 1


class UserError(ValueError):
    pass


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise UserError(f"user name must be 1-64 letters, digits, '_', '.', '@', '-' (starting with a letter "
                        f"or digit), got {name!r}")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password must be at least {MIN_PASSWORD} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, maxmem=64 * 1024 * 1024,
                            dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=64 * 1024 * 1024, dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


# A hash to check against when the user does not exist, so "no such user" takes as long as "wrong password".
_DUMMY = None


def dummy_hash() -> str:
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = hash_password(secrets.token_hex(16))
    return _DUMMY


class LoginLimiter:
    """At most ``attempts`` failed logins per user name and per client address in ``window_s``;
    past that, logins for that name or from that address are refused until the window clears.
    A success clears the name's record (not the address's: one good account must not unlock guessing)."""

    def __init__(self, attempts: int = 5, window_s: float = 300.0):
        self.attempts = attempts
        self.window_s = window_s
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.setdefault(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def retry_after(self, name: str, address: str, now: float | None = None) -> float:
        """Seconds until a login for ``name`` from ``address`` is allowed again (0: allowed now)."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        with self._lock:
            for key in (f"u:{name}", f"a:{address}"):
                q = self._recent(key, now)
                if len(q) >= self.attempts:
                    wait = max(wait, self.window_s - (now - q[0]))
        return wait

    def failed(self, name: str, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in (f"u:{name}", f"a:{address}"):
                self._recent(key, now).append(now)
            if len(self._fails) > 10_000:   # bounded: forget the quiet ones
                for key in [k for k, q in self._fails.items() if not q]:
                    del self._fails[key]

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._fails.pop(f"u:{name}", None)
