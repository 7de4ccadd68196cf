import os
import subprocess
import sys

from tests.conftest import REPO


def test_openmp_waits_passively_unless_the_user_says_otherwise():
    code = "import checkout_cam, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE"


def test_finetune_spins_because_it_is_the_only_work_in_its_process():
    from checkout_cam import _cli_command
    assert _cli_command(["/usr/bin/checkout-cam", "-v", "finetune", "--train", "x"]) == "finetune"
    assert _cli_command(["-m", "finetune"]) == "finetune"  # python -m checkout_cam, while importing
    assert _cli_command(["/usr/bin/checkout-cam", "live", "--source", "0"]) == "live"
    assert _cli_command(["pytest", "finetune"]) is None  # some other program
    code = ("import sys; sys.argv = ['checkout-cam', 'finetune']; import checkout_cam, os; "
            "print(os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "OMP_WAIT_POLICY": "PASSIVE"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE"
