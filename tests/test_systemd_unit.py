"""systemd/checkout-cam.service: systemd accepts it, and it says what the service needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from checkout_cam.config import load_config
from tests.conftest import REPO

UNIT = REPO / "systemd" / "checkout-cam.service"
SERVICE_CONFIG = REPO / "systemd" / "config.yaml"
INSTALL_DOC = REPO / "systemd" / "README.md"
VENV = "/opt/checkout-cam/venv"


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
    assert one(service, "ExecStart") == f"{VENV}/bin/checkout-cam serve --config /etc/checkout-cam/config.yaml"
    assert one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"  # serve reopens its event log on SIGHUP
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


def test_install_steps_match_the_unit(service):
    """The README's install block creates the venv ExecStart runs, outside what ProtectHome hides,
    installs the model where the config points, and asks for no GPU."""
    doc = INSTALL_DOC.read_text()
    block = doc[doc.index("## Install"):doc.index("## Watch it")]
    program = one(service, "ExecStart").split()[0]
    assert f"python3 -m venv {VENV}" in block and program == f"{VENV}/bin/checkout-cam"
    assert f"{VENV}/bin/pip install ." in block and "\npython3 -m pip install ." not in block
    assert one(service, "ProtectHome") == "yes"
    assert not PurePosixPath(program).is_relative_to("/home") and not PurePosixPath(program).is_relative_to("/root")
    model = load_config(SERVICE_CONFIG).model.path
    assert f"--out {model}" in block and f"/var/lib/checkout-cam/models/{PurePosixPath(model).name}" in block
    assert "doctor --config /etc/checkout-cam/config.yaml" in block
    assert "nvidia" not in doc.lower() and "cuda" not in doc.lower()
    # The model step comes before the checks that need it, and the user before the chown.
    order = [block.index(s) for s in ("useradd", "export-model", "validate-config", "checkout-cam doctor", "enable --now")]
    assert order == sorted(order)


# ---------------------------------------------------------------- systemd-analyze verify

def installed_root(unit_text: str, tmp_path: Path) -> Path:
    """A filesystem root laid out as the install steps leave it: the unit in /etc/systemd/system,
    the venv's checkout-cam under /opt (a launcher for this checkout), systemd's own units."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system" / UNIT.name).write_text(unit_text)
    program = root / VENV.lstrip("/") / "bin" / "checkout-cam"
    program.parent.mkdir(parents=True)
    program.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
                       "from checkout_cam.cli import main\nsys.exit(main())\n")
    program.chmod(0o755)
    system_units = Path("/usr/lib/systemd/system")
    if system_units.is_dir():  # sysinit.target and friends, which every service depends on
        shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("kill") or "/bin/kill", root / "usr/bin" / "kill")
    (root / "bin").symlink_to("usr/bin")
    return root


def verify_problems(unit_text: str, tmp_path: Path) -> list[str]:
    """What `systemd-analyze verify` objects to in this unit, installed as the README says.

    verify exits 0 on unknown keys and unparsable values, so its stderr is read
    too; it also checks that ExecStart's program exists and is executable at
    the installed path (inside the root).
    """
    root = installed_root(unit_text, tmp_path)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}",
                           f"/etc/systemd/system/{UNIT.name}"], capture_output=True, text=True, timeout=120)
    # Complaints about other units on this machine (pulled in by After=/Wants=) are not ours.
    problems = [ln for ln in proc.stderr.splitlines() if UNIT.name in ln]
    if proc.returncode != 0:
        problems.append(f"exit status {proc.returncode}: {proc.stderr.strip()}")
    return problems


def test_the_installed_program_runs(tmp_path):
    root = installed_root(UNIT.read_text(), tmp_path)
    proc = subprocess.run([str(root / VENV.lstrip("/") / "bin/checkout-cam"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "serve" in proc.stdout


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
    (f"ExecStart={VENV}/bin/checkout-cam ", "ExecStart=/usr/local/bin/checkout-cam ",
     "/usr/local/bin/checkout-cam"),                               # a program the install does not create
], ids=["unknown-key", "bad-value", "wrong-program"])
def test_verify_check_catches_mistakes(systemd_analyze, tmp_path, good, bad, complaint):
    text = UNIT.read_text()
    assert good in text
    problems = verify_problems(text.replace(good, bad), tmp_path)
    assert any(complaint in p for p in problems), problems
