import textwrap

import pytest
from checkout_cam.config import Config, config_from_dict, load_config, override, render_defaults_yaml, to_dict
from checkout_cam.errors import ConfigError
from tests.conftest import REPO


def test_shipped_config_yaml_equals_code_defaults():
    assert (REPO / "config.yaml").read_text() == render_defaults_yaml(), \
        "regenerate: checkout-cam validate-config --print-defaults > config.yaml"
    assert load_config(REPO / "config.yaml") == Config()


def test_every_setting_has_a_description():
    lines = render_defaults_yaml().splitlines()
    settings = [i for i, ln in enumerate(lines) if ln.startswith("  ") and not ln.startswith("  #")]
    assert len(settings) == sum(len(v) for v in to_dict(Config()).values())
    for i in settings:
        assert lines[i - 1].startswith("  # ") and len(lines[i - 1]) > 10, f"no description for {lines[i]!r}"


def test_errors_name_their_key_paths():
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"review": {"min_confidence": 1.5, "min_margn": 0.1},
                          "model": {"top_k": "three"}, "bogus": {}})
    errs = exc.value.errors
    assert any(e.startswith("review.min_confidence: must be <= 1.0") for e in errs)
    assert any(e.startswith("review.min_margn: unknown setting") for e in errs)
    assert any(e.startswith("model.top_k: must be an integer") for e in errs)
    assert any(e.startswith("bogus: unknown setting") for e in errs)


def test_roi_is_checked_as_a_rectangle_inside_the_frame():
    assert config_from_dict({"preprocess": {"roi": [0.1, 0.2, 0.5, 0.5]}}).preprocess.roi == [0.1, 0.2, 0.5, 0.5]
    with pytest.raises(ConfigError, match=r"preprocess.roi: x\+width"):
        config_from_dict({"preprocess": {"roi": [0.6, 0.0, 0.5, 0.5]}})
    with pytest.raises(ConfigError, match=r"preprocess.roi: must have 4 items"):
        config_from_dict({"preprocess": {"roi": [0.1, 0.2]}})


def test_bool_is_not_an_int_and_int_is_a_float():
    with pytest.raises(ConfigError, match="model.top_k: must be an integer"):
        config_from_dict({"model": {"top_k": True}})
    assert config_from_dict({"review": {"min_margin": 0}}).review.min_margin == 0.0
    assert config_from_dict({"source": {"uri": 0}}).source.uri == "0"


def test_load_config_file_errors(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
    ok = tmp_path / "ok.yaml"
    ok.write_text(textwrap.dedent("""\
        review:
          min_confidence: 0.8
    """))
    assert load_config(ok).review.min_confidence == 0.8


def test_override_validates():
    cfg = override(Config(), "model.path", "x.pt")
    assert cfg.model.path == "x.pt"
    with pytest.raises(ConfigError, match="command line: review.min_margin"):
        override(cfg, "review.min_margin", -1.0)
