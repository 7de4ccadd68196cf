"""`--help` must be instant: the CLI imports no ML runtime until a command runs, and serve never
imports torchvision (it only runs a saved artifact)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("torch", "torchvision", "cv2", "numpy", "onnxruntime")


def _modules_after(code: str, timeout: float = 120) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split("\n")[-2].split())


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["export-model", "--help"],
                                  ["finetune", "--help"], ["evaluate", "--help"], ["replay", "--help"]])
def test_help_imports_no_ml_runtime(argv):
    code = ("import contextlib, io\nfrom checkout_cam.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n    try:\n        main({argv!r})\n"
            "    except SystemExit:\n        pass")
    loaded = _modules_after(code)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_cli_constants_match_the_modules_they_stand_for():
    from checkout_cam.cli import export_model, finetune
    from checkout_cam.model import quantize
    from checkout_cam.training import finetune as training
    assert export_model.DEFAULT_MAX_IMAGES == quantize.DEFAULT_MAX_IMAGES
    assert finetune.FREEZE_CHOICES == training.FREEZE_CHOICES


def test_serve_runs_without_importing_torchvision(random_artifact, videos, tmp_path):
    code = (
        "import os, signal, sys, threading\n"
        "from checkout_cam.cli import main\n"
        "threading.Timer(6.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()\n"
        f"rc = main(['serve', '--model', {str(random_artifact)!r}, '--source', {str(videos / 'box.mp4')!r},"
        f" '--log', {str(tmp_path / 'e.jsonl')!r}])\n"
        "assert rc == 0, rc\n")
    loaded = _modules_after(code, timeout=180)
    assert "torch" in loaded  # it did run the model
    assert "torchvision" not in loaded
