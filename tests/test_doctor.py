"""`checkout-cam doctor` on real parts: a model file, box.mp4 as the camera, a log folder."""

import json

import pytest

from checkout_cam.cli import main
from checkout_cam.cpu import parse_cpuinfo
from checkout_cam.doctor import check_cpu

AVX2_ONLY = "processor : 0\nflags : fpu sse2 avx avx2 fma\n"
SAPPHIRE = "flags : avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8\n"


def test_cpu_instruction_sets_from_cpuinfo():
    assert {"avx2", "fma"} <= parse_cpuinfo(AVX2_ONLY).flags
    avx2 = check_cpu(AVX2_ONLY)
    assert avx2.status == "ok" and "AVX2" in avx2.detail and "AVX-512" not in avx2.detail
    assert "no VNNI/AMX" in avx2.detail
    amx = check_cpu(SAPPHIRE)
    assert "AVX-512 VNNI" in amx.detail and "AMX-INT8" in amx.detail and "AVX-512 BF16" in amx.detail
    old = check_cpu("flags : fpu sse2 sse4_2\n")
    assert old.status == "warn" and "AVX2" in old.fix


@pytest.fixture(scope="module")
def trained_artifact(tmp_path_factory, random_weights):
    from checkout_cam.model.artifact import ArtifactMeta, save_artifact
    out = tmp_path_factory.mktemp("models") / "lane.pt"
    meta = ArtifactMeta(name="lane", arch="resnet18", labels=random_weights.labels,
                        weights_source="test", weights_sha256=None, trained=True)
    return save_artifact(random_weights.model, meta, out)


def _doctor(capsys, *args):
    rc = main(["doctor", "--json", "--seconds", "1", *args])
    out = json.loads(capsys.readouterr().out)
    return rc, {f["check"]: f for f in out["findings"]}, out["ok"]


def test_a_ready_lane_passes(trained_artifact, videos, tmp_path, capsys):
    rc, found, ok = _doctor(capsys, "--model", str(trained_artifact), "--source", str(videos / "box.mp4"),
                            "--log", str(tmp_path / "logs" / "events.jsonl"))
    assert rc == 0 and ok, found
    assert found["model"]["status"] == "ok" and "trained" in found["model"]["detail"]
    cam = found["camera"]["detail"]
    assert "640x480" in cam and " fps" in cam
    fps = float(cam.split(" frames at ")[1].split(" fps")[0])
    assert 20 < fps < 40  # box.mp4 is paced at its own 30 fps, as serve paces it
    assert found["event log"]["status"] == "ok" and found["cpu"]["status"] in ("ok", "warn")


def test_what_must_be_fixed_fails_with_a_fix(random_artifact, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("source:\n  stall_timeout_s: 1.0\n")
    rc, found, ok = _doctor(capsys, "--config", str(cfg), "--model", str(random_artifact),
                            "--source", "http://127.0.0.1:9/cam.mjpg", "--log", str(blocker / "events.jsonl"))
    assert rc == 2 and not ok
    assert found["model"]["status"] == "fail" and "UNTRAINED" in found["model"]["detail"]
    assert found["camera"]["status"] == "fail" and "gave no frame" in found["camera"]["detail"]
    assert found["event log"]["status"] == "fail" and "is a file" in found["event log"]["detail"]
    assert all(found[k]["fix"] for k in ("model", "camera", "event log"))


def test_a_bad_config_is_reported_not_raised(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("review:\n  min_confidence: .nan\n")
    rc, found, ok = _doctor(capsys, "--config", str(cfg))
    assert rc == 2 and found["config"]["status"] == "fail" and "finite" in found["config"]["detail"]
