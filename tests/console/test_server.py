"""The console's bind rule, its CLI's users commands and errors, and recovery of correction photos."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from checkout_cam.cli import main
from checkout_cam.console.server import check_bind, is_loopback
from checkout_cam.console.service import Console
from checkout_cam.console.store import Store
from checkout_cam.errors import CheckoutCamError
from tests.conftest import REPO
from tests.console.conftest import make_record


class Result:
    def __init__(self, returncode, out, err):
        self.returncode, self.stdout, self.stderr = returncode, out, err


@pytest.fixture
def cli(capsys, monkeypatch):
    """`checkout-cam console ...` in this process (the CLI as a process is run by test_browser)."""
    def run(*args, stdin=None):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        code = main(["console", *args])
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)
    return run


def test_bind_rule_loopback_always_other_addresses_only_with_users(caplog):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")
    check_bind("127.0.0.1", 0, tls=False)
    with pytest.raises(CheckoutCamError, match="add-user"):
        check_bind("0.0.0.0", 0, tls=False)
    check_bind("0.0.0.0", 1, tls=True)
    assert "in clear" not in caplog.text
    check_bind("0.0.0.0", 1, tls=False)
    assert "in clear" in caplog.text


def test_console_refuses_a_public_address_without_users(tmp_path):
    r = subprocess.run([sys.executable, "-m", "checkout_cam", "console", "--http", "0.0.0.0:8999", "--data",
                        str(tmp_path / "d")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "add-user" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_users_commands(tmp_path, cli):
    data = str(tmp_path / "d")
    r = cli("add-user", "ann", "--role", "attendant", "--data", data, "--password-stdin", stdin="short\n")
    assert r.returncode != 0 and "at least 8" in r.stderr
    r = cli("add-user", "bad name", "--role", "viewer", "--data", data, "--password-stdin", stdin="long-enough\n")
    assert r.returncode != 0 and "user name" in r.stderr
    r = cli("add-user", "ann", "--role", "attendant", "--data", data)     # no terminal, no --password-stdin
    assert r.returncode != 0 and "--password-stdin" in r.stderr
    assert cli("add-user", "ann", "--role", "attendant", "--data", data, "--password-stdin",
               stdin="long-enough\n").returncode == 0
    r = cli("--data", data, "add-user", "ann", "--role", "viewer", "--password-stdin", stdin="long-enough-2\n")
    assert r.returncode == 0 and "updated viewer ann" in r.stdout
    assert "ann\tviewer" in cli("list-users", "--data", data).stdout
    assert cli("remove-user", "ann", "--data", data).returncode == 0
    assert cli("remove-user", "ann", "--data", data).returncode != 0
    with Store(data) as store:
        assert store.users() == []


def test_a_photo_lost_in_a_crash_is_written_again_at_start(tmp_path):
    with Store(tmp_path) as store:
        console = Console(store)
        rec = make_record()
        store.add_event("new", rec)
        store.add_picture("lane1", rec.id, b"\xff\xd8\xffphoto")
        out = console.resolve(user="ann", role="attendant", event_id=rec.id, outcome="accept")
        photo = tmp_path / out["correction"]
        photo.unlink()                      # as if the process died between the row and the file
        assert Console(store).repair_corrections() == 1
        assert photo.read_bytes() == b"\xff\xd8\xffphoto"
        assert Console(store).repair_corrections() == 0
