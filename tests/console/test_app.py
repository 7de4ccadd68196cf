"""The web app through HTTP: login, sessions, CSRF, roles, rate limits, resolutions, corrections, history."""

from __future__ import annotations

import csv
import io
import re

import pytest
from fastapi.testclient import TestClient

from checkout_cam.console.app import create_app
from checkout_cam.console.service import Console, label_folder
from checkout_cam.console.store import Store
from checkout_cam.console.users import LoginLimiter, hash_password
from tests.console.conftest import make_record

JPEG = b"\xff\xd8\xff\xe0fake-but-magic"


class Recorder:
    def __init__(self):
        self.sent = []

    def publish(self, record):
        self.sent.append(record)


@pytest.fixture
def setup(tmp_path):
    store = Store(tmp_path / "data")
    store.add_user("ann", "attendant", hash_password("ann-secret-1"))
    store.add_user("vic", "viewer", hash_password("vic-secret-1"))
    pub = Recorder()
    labels = ("Banana", "Apple", "Kiwi", "Oat-Milk")
    # the lanes' model (sha256 "x" in make_record) has these labels
    console = Console(store, publisher=pub, labels=labels, name="test-console", models={"x": list(labels)})
    app = create_app(console, limiter=LoginLimiter(attempts=3, window_s=60))
    yield store, console, pub, app
    store.close()


def login(client, name, password):
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return client.post("/login", data={"name": name, "password": password, "csrf": token}, follow_redirects=False)


def csrf_of(client):
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)


def test_login_session_cookie_and_logout(setup):
    store, console, pub, app = setup
    c = TestClient(app)
    assert c.get("/", follow_redirects=False).headers["location"] == "/login"
    assert c.get("/api/state").status_code == 401
    r = login(c, "ann", "ann-secret-1")
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "cc_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Content-Security-Policy" in c.get("/").headers
    assert c.get("/api/state").json()["me"] == {"user": "ann", "role": "attendant"}
    token = csrf_of(c)
    assert c.post("/logout", data={}, follow_redirects=False).status_code == 403     # no CSRF token
    assert c.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert c.get("/api/state").status_code == 401


def test_login_form_needs_its_token_and_failures_are_rate_limited(setup):
    store, console, pub, app = setup
    c = TestClient(app)
    assert c.post("/login", data={"name": "ann", "password": "ann-secret-1", "csrf": "forged"}).status_code == 403
    for _ in range(3):
        assert login(c, "ann", "wrong-password").status_code == 401
    r = login(c, "ann", "ann-secret-1")        # even the right password waits now
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert login(c, "nobody", "whatever-123").status_code == 429   # the address is limited too


def test_resolutions_roles_csrf_corrections_and_history(setup):
    store, console, pub, app = setup
    a = make_record("lane1", 1, label="Banana")
    b = make_record("lane2", 1, label="Apple")
    n = make_record("lane2", 2, label="Kiwi")
    for rec in (a, b, n):
        store.add_event("new", rec)
    store.add_picture("lane1", a.id, JPEG)
    store.add_picture("lane2", b.id, JPEG + b"2")

    v = TestClient(app)
    login(v, "vic", "vic-secret-1")
    vt = csrf_of(v)
    r = v.post("/api/resolve", json={"event_id": a.id, "outcome": "accept"}, headers={"X-CSRF-Token": vt})
    assert r.status_code == 403 and "viewer" in r.json()["detail"]

    c = TestClient(app)
    login(c, "ann", "ann-secret-1")
    token = csrf_of(c)
    state = c.get("/api/state").json()
    assert [q["id"] for q in state["queue"]] == [a.id, b.id, n.id]
    assert c.get(state["queue"][0]["picture"]).content == JPEG
    assert c.post("/api/resolve", json={"event_id": a.id, "outcome": "accept"}).status_code == 403   # no token
    assert c.post("/api/resolve", json={"event_id": a.id, "outcome": "accept"},
                  headers={"X-CSRF-Token": "x" + token}).status_code == 403
    assert pub.sent == []

    r = c.post("/api/resolve", json={"event_id": a.id, "outcome": "accept"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json()["label"] == "Banana"
    r = c.post("/api/resolve", json={"event_id": b.id, "outcome": "correct", "label": "Oat-Milk", "index": 1},
               headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json()["index"] == 3     # the lane model's index, not the page's
    r = c.post("/api/resolve", json={"event_id": n.id, "outcome": "correct", "label": "Rye bread / sliced"},
               headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json()["index"] is None and r.json()["correction"] is None   # no picture
    assert c.post("/api/resolve", json={"event_id": a.id, "outcome": "no_item"},
                  headers={"X-CSRF-Token": token}).status_code == 409
    assert c.post("/api/resolve", json={"event_id": "lane1-20261201T150000Z-abcdef-000099", "outcome": "accept"},
                  headers={"X-CSRF-Token": token}).status_code == 404
    assert c.post("/api/resolve", json={"event_id": n.id, "outcome": "maybe"},
                  headers={"X-CSRF-Token": token}).status_code == 400

    assert [(p.event_id, p.outcome, p.label, p.resolver, p.console) for p in pub.sent] == [
        (a.id, "accept", "Banana", "ann", "test-console"), (b.id, "correct", "Oat-Milk", "ann", "test-console"),
        (n.id, "correct", "Rye bread / sliced", "ann", "test-console")]
    root = store.dir / "corrections"
    assert (root / "Banana" / f"{a.id}.jpg").read_bytes() == JPEG
    assert (root / "Oat-Milk" / f"{b.id}.jpg").read_bytes() == JPEG + b"2"
    assert sorted(p.name for p in root.iterdir()) == ["Banana", "Oat-Milk"]
    assert c.get("/api/state").json()["queue"] == []

    hist = c.get("/api/history").json()["history"]
    assert {h["event_id"]: h["resolver"] for h in hist} == {a.id: "ann", b.id: "ann", n.id: "ann"}
    assert [h["event_id"] for h in c.get("/api/history?lane=lane2&outcome=correct").json()["history"]] == [n.id, b.id]
    rows = list(csv.DictReader(io.StringIO(c.get("/history.csv?lane=lane1").text)))
    assert [(r["event_id"], r["outcome"], r["resolver"], r["model_label"]) for r in rows] == [
        (a.id, "accept", "ann", "Banana")]
    assert v.get("/history.csv").status_code == 200     # viewers may read the audit trail


def test_label_folders_are_safe_and_keep_model_labels():
    assert label_folder("Granny-Smith") == "Granny-Smith"
    assert label_folder("great white shark") == "great white shark"
    assert label_folder("../etc/passwd") == "_etc_passwd"
    assert label_folder("..") == "_"
