"""live, serve and replay: their help says what they do, and cheap mistakes are reported first."""

import pytest

from checkout_cam.cli import build_parser, main


def _help(command: str) -> str:
    return next(a for a in build_parser()._subparsers._group_actions[0].choices.items()
                if a[0] == command)[1].format_help()


@pytest.mark.parametrize("command", ["live", "replay", "serve"])
def test_no_realtime_flag_that_does_nothing_or_always_fails(command):
    assert "--realtime" not in _help(command)


def test_replay_log_help_does_not_claim_a_default():
    text = " ".join(_help("replay").split())
    assert "serve.log_path" not in text and "(default: none)" in text


@pytest.mark.parametrize("command", ["replay", "serve"])
def test_a_mistyped_video_path_is_reported_before_the_model_load(command, tmp_path, capsys):
    # The model does not exist either: the video error must come first (it is cheap to find).
    rc = main([command, "--source", str(tmp_path / "bxo.mp4"), "--model", str(tmp_path / "none.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "video file not found" in err and "bxo.mp4" in err, err
