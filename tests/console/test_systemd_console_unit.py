"""systemd/checkout-cam-console.service: systemd accepts it, and it runs the console as the README says."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.test_systemd_unit import parse_unit

UNIT = REPO / "systemd" / "checkout-cam-console.service"


def test_console_unit_runs_unprivileged_on_loopback_with_its_state_directory():
    service = parse_unit(UNIT.read_text())["Service"]
    (exec_start,) = service["ExecStart"]
    assert exec_start.startswith("/usr/local/bin/checkout-cam console ")
    assert "--http 127.0.0.1:" in exec_start            # the bind rule's default
    (state,) = service["StateDirectory"]
    assert f"--data /var/lib/{state}" in exec_start and service["WorkingDirectory"] == [f"/var/lib/{state}"]
    assert service["User"] == ["checkout-cam"] and service["RestartPreventExitStatus"] == ["2"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert service[key] == ["yes"], key


def test_systemd_analyze_verify_accepts_the_console_unit(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd); cannot verify the unit")
    text = re.sub(r"^ExecStart=/usr/local/bin/checkout-cam ", f"ExecStart={sys.executable} -m checkout_cam ",
                  UNIT.read_text(), flags=re.M)
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True,
                          timeout=120)
    problems = [ln for ln in proc.stderr.splitlines() if UNIT.name in ln]
    assert proc.returncode == 0 and problems == [], proc.stderr
