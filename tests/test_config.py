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


def _float_settings():
    import typing
    from dataclasses import fields
    for sec in fields(Config):
        hints = typing.get_type_hints(sec.type if isinstance(sec.type, type) else type(getattr(Config(), sec.name)))
        for f in fields(type(getattr(Config(), sec.name))):
            if hints[f.name] is float:
                yield f"{sec.name}.{f.name}"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dotted", list(_float_settings()))
def test_every_float_setting_must_be_finite(dotted, bad):
    section, name = dotted.split(".")
    with pytest.raises(ConfigError) as exc:
        config_from_dict({section: {name: bad}})
    assert exc.value.errors == [f"{dotted}: must be a finite number, got {bad!r}"]


def test_nan_in_yaml_and_in_lists_is_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("review:\n  min_confidence: .nan\npreprocess:\n  roi: [0.1, .inf, 0.2, 0.2]\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert "review.min_confidence: must be a finite number, got nan" in exc.value.errors
    assert "preprocess.roi[1]: must be a finite number, got inf" in exc.value.errors


def test_a_file_that_is_not_utf8_is_one_config_error(tmp_path):
    f = tmp_path / "latin1.yaml"
    f.write_bytes("review:\n  # caf\xe9\n  min_confidence: 0.5\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at line 2\)"):
        load_config(f)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_path_problems_name_their_keys(tmp_path):
    from checkout_cam.config import path_problems
    (tmp_path / "model.pt").write_bytes(b"x")
    (tmp_path / "afile").write_text("")
    cfg = config_from_dict({"model": {"path": "model.pt"}, "source": {"uri": "0"},
                            "serve": {"log_path": "logs/events.jsonl"}, "live": {"snapshot_dir": "snaps"}})
    assert path_problems(cfg, base=tmp_path) == []
    cfg = config_from_dict({"model": {"path": "missing.pt"}, "source": {"uri": "nosuch.mp4"},
                            "serve": {"log_path": "afile/events.jsonl"}})
    problems = path_problems(cfg, base=tmp_path)
    assert [p.split(":")[0] for p in problems] == ["model.path", "source.uri", "serve.log_path"]
    assert "afile is a file" in problems[2]
