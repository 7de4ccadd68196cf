"""systemd/checkout-cam.service: systemd accepts it, and it says what the service needs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from checkout_cam.config import load_config
from tests.conftest import REPO

UNIT = REPO / "systemd" / "checkout-cam.service"
SERVICE_CONFIG = REPO / "systemd" / "config.yaml"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value in order (keys like DeviceAllow= may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"line {n} is not KEY=VALUE in a section: {line!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key, [])
    assert len(values) == 1, f"{key}= should be set once, got {values}"
    return values[0]


def test_unit_is_a_notify_service_with_watchdog_and_restart(service):
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert 10 <= int(one(service, "WatchdogSec")) <= 120
    assert one(service, "Restart") == "on-failure"
    assert one(service, "RestartSec") == "5"
    assert one(service, "TimeoutStopSec") == "10"
    assert one(service, "ExecStart") == \
        "/usr/local/bin/checkout-cam serve --config /etc/checkout-cam/config.yaml"
    assert "PYTHONUNBUFFERED=1" in service["Environment"]
    assert parse_unit(UNIT.read_text())["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_runs_unprivileged_with_camera_access(service):
    assert one(service, "User") == "checkout-cam"
    assert one(service, "Group") == "checkout-cam"
    assert "video" in one(service, "SupplementaryGroups").split()
    assert one(service, "DevicePolicy") == "closed"
    assert "char-video4linux rw" in service["DeviceAllow"]
    assert "PrivateDevices" not in service, "PrivateDevices hides /dev/video*"


def test_unit_is_hardened(service):
    for key in ["NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectControlGroups", "RestrictNamespaces", "LockPersonality"]:
        assert one(service, key) == "yes", key
    assert one(service, "ProtectSystem") == "strict"
    assert set(one(service, "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # torch's oneDNN kernels are JIT-compiled into W+X memory: MDWE would break inference.
    assert service.get("MemoryDenyWriteExecute", ["no"]) == ["no"]


def test_service_config_writes_where_the_unit_allows(service):
    cfg = load_config(SERVICE_CONFIG)
    state = PurePosixPath("/var/lib") / one(service, "StateDirectory")
    logs = PurePosixPath("/var/log") / one(service, "LogsDirectory")
    assert PurePosixPath(cfg.serve.log_path) == logs / "events.jsonl"
    assert PurePosixPath(cfg.model.path).is_relative_to(state)
    assert PurePosixPath(one(service, "WorkingDirectory")) == state
    assert one(service, "ExecStart").endswith("--config /etc/checkout-cam/config.yaml")


# ---------------------------------------------------------------- systemd-analyze verify

def verify_problems(unit_text: str, tmp_path: Path) -> list[str]:
    """What `systemd-analyze verify` objects to in this unit (empty: accepted).

    verify exits 0 on unknown keys and unparsable values, so its stderr is read
    too. It also insists that ExecStart's program exists, which
    /usr/local/bin/checkout-cam does not on a development machine: the copy runs
    this Python's `-m checkout_cam` with the same arguments instead.
    """
    exec_start = re.compile(r"^ExecStart=/usr/local/bin/checkout-cam ", re.M)
    assert exec_start.search(unit_text), "the rewrite below must find the real ExecStart"
    copy = tmp_path / UNIT.name
    copy.write_text(exec_start.sub(f"ExecStart={sys.executable} -m checkout_cam ", unit_text))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                          capture_output=True, text=True, timeout=120)
    # Complaints about other units on this machine (pulled in by After=/Wants=) are not ours.
    problems = [ln for ln in proc.stderr.splitlines() if UNIT.name in ln]
    if proc.returncode != 0:
        problems.append(f"exit status {proc.returncode}: {proc.stderr.strip()}")
    return problems


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd); cannot verify the unit")
    return path


def test_systemd_analyze_verify_accepts_the_unit(systemd_analyze, tmp_path):
    assert verify_problems(UNIT.read_text(), tmp_path) == []


@pytest.mark.parametrize("good, bad, complaint", [
    ("WatchdogSec=30", "WatchdgSec=30", "WatchdgSec"),          # a misspelt directive
    ("ProtectSystem=strict", "ProtectSystem=strickt", "strickt"),  # a value systemd cannot parse
], ids=["unknown-key", "bad-value"])
def test_verify_check_catches_mistakes(systemd_analyze, tmp_path, good, bad, complaint):
    text = UNIT.read_text()
    assert good in text
    problems = verify_problems(text.replace(good, bad), tmp_path)
    assert any(complaint in p for p in problems), problems
