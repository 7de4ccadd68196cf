import os
import subprocess
import sys

from tests.conftest import REPO


def _policy_after_import(argv: list[str] | None = None, user_setting: str | None = None) -> str:
    """OMP_WAIT_POLICY as a fresh interpreter sees it after `import checkout_cam`."""
    code = (f"import sys; sys.argv = {argv!r}; " if argv else "") + \
        "import checkout_cam, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_setting:
        env["OMP_WAIT_POLICY"] = user_setting
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    return out.stdout.strip()


def test_openmp_waits_passively_unless_the_user_says_otherwise():
    assert _policy_after_import() == "PASSIVE"
    assert _policy_after_import(user_setting="ACTIVE") == "ACTIVE"


def test_finetune_spins_because_it_is_the_only_work_in_its_process():
    from checkout_cam import _cli_command
    assert _cli_command(["/usr/bin/checkout-cam", "-v", "finetune", "--train", "x"]) == "finetune"
    assert _cli_command(["-m", "finetune"]) == "finetune"  # python -m checkout_cam, while importing
    assert _cli_command(["/usr/bin/checkout-cam", "live", "--source", "0"]) == "live"
    assert _cli_command(["pytest", "finetune"]) is None  # some other program
    assert _policy_after_import(["checkout-cam", "finetune"]) == "ACTIVE"
    assert _policy_after_import(["checkout-cam", "serve"]) == "PASSIVE"
    assert _policy_after_import(["checkout-cam", "finetune"], user_setting="PASSIVE") == "PASSIVE"
