from checkout_cam.cli import main
from checkout_cam.config import render_defaults_yaml


def test_validate_ok_and_errors(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(render_defaults_yaml())
    assert main(["validate-config", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("review:\n  min_confidence: 2\n  colour: red\n")
    assert main(["validate-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "review.min_confidence: must be <= 1.0, got 2.0" in err
    assert "review.colour: unknown setting" in err


def test_print_defaults(capsys):
    assert main(["validate-config", "--print-defaults"]) == 0
    assert capsys.readouterr().out == render_defaults_yaml()
