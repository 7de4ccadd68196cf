from checkout_cam.cli import main
from checkout_cam.config import render_defaults_yaml


def test_validate_ok_and_errors(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(render_defaults_yaml())
    assert main(["validate-config", "--no-paths", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("review:\n  min_confidence: 2\n  colour: red\n")
    assert main(["validate-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "review.min_confidence: must be <= 1.0, got 2.0" in err
    assert "review.colour: unknown setting" in err


def test_print_defaults(capsys):
    assert main(["validate-config", "--print-defaults"]) == 0
    assert capsys.readouterr().out == render_defaults_yaml()


def test_validate_checks_the_paths_it_names(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  path: models/none.pt\n")
    assert main(["validate-config", str(cfg)]) == 2
    assert "model.path: " in capsys.readouterr().err
    assert main(["validate-config", "--no-paths", str(cfg)]) == 0
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "none.pt").write_bytes(b"x")
    assert main(["validate-config", str(cfg)]) == 0


def test_unreadable_config_is_exit_2_with_one_line(tmp_path):
    import subprocess
    import sys
    from tests.conftest import REPO
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"serve:\n  lane_id: caf\xe9\n")
    for cmd in (["validate-config", str(bad)], ["serve", "--config", str(bad)]):
        proc = subprocess.run([sys.executable, "-m", "checkout_cam", *cmd], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert "not UTF-8" in proc.stderr and "Traceback" not in proc.stderr
        assert len(lines) <= 2, lines  # "FILE: 1 error(s)" + the error, or the one CLI error line
