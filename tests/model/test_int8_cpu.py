"""int8 activations follow the CPU: 8 bits where VNNI sums into int32, 7 where int16 sums saturate."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchvision.models import resnet18

from checkout_cam.cpu import parse_cpuinfo
from checkout_cam.errors import ModelFileError
from checkout_cam.model import open_classifier, read_meta
from checkout_cam.model import quantize
from checkout_cam.model.artifact import ArtifactMeta
from checkout_cam.model.quantize import choose_recipe, int8_vnni, quantize_int8, save_int8_artifact
from tests.conftest import REPO

VNNI_CPU = parse_cpuinfo("model name\t: Fake Xeon with VNNI\nflags\t: avx2 fma avx512f avx512bw avx512_vnni\n")
AVX2_CPU = parse_cpuinfo("model name\t: Fake EPYC, AVX2 only\nflags\t: avx2 fma\n")


def _tiny():
    torch.manual_seed(0)
    model = resnet18(num_classes=3).eval()
    meta = ArtifactMeta(name="tiny", arch="resnet18", labels=["a", "b", "c"], weights_source="test",
                        weights_sha256=None, trained=True, input_size=64, resize_size=73)
    return model, meta


@pytest.fixture(scope="module")
def calibration(tmp_path_factory, grocery):
    lines = (grocery / "train.txt").read_text().splitlines()[::400][:6]
    out = tmp_path_factory.mktemp("cal") / "cal.txt"
    out.write_text("\n".join(f"{grocery / ln.split(',')[0].strip()}, 0" for ln in lines) + "\n")
    return out


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, calibration):
    """The same tiny model quantized both ways on this machine."""
    model, meta = _tiny()
    folder = tmp_path_factory.mktemp("int8")
    return {bits: save_int8_artifact(model, meta, folder / f"tiny-{bits}bit.pt", calibration, progress=False,
                                     activations=bits)
            for bits in ("8", "7")}


def test_auto_recipe_follows_the_cpu(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert choose_recipe("auto", VNNI_CPU).activation_bits == 8
    assert choose_recipe("auto", VNNI_CPU).needs_vnni
    assert choose_recipe("auto", AVX2_CPU).activation_bits == 7
    assert choose_recipe("auto", AVX2_CPU).reduce_range
    # Asked for explicitly, 7 bits is made anywhere (for AVX2-only lanes, built on a VNNI box).
    assert choose_recipe("7", VNNI_CPU).activation_bits == 7
    with pytest.raises(Exception, match="must be one of auto, 8, 7"):
        choose_recipe("6", VNNI_CPU)


def test_onednn_isa_cap_below_vnni_counts_as_no_vnni(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not int8_vnni(VNNI_CPU)
    assert choose_recipe("auto", VNNI_CPU).activation_bits == 7
    for cap in ("AVX512_CORE_VNNI", "AVX512_CORE_AMX", "ALL", ""):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert int8_vnni(VNNI_CPU), cap
    assert not int8_vnni(AVX2_CPU)


def test_recipe_is_recorded_and_changes_the_activation_scales(artifacts):
    metas = {bits: read_meta(path).extra["int8"] for bits, path in artifacts.items()}
    assert metas["8"]["activation_bits"] == 8 and metas["8"]["needs_vnni"] and not metas["8"]["reduce_range"]
    assert metas["7"]["activation_bits"] == 7 and not metas["7"]["needs_vnni"] and metas["7"]["reduce_range"]
    assert metas["8"]["quantized_on"]["isa"] == quantize.cpu_info().isa
    # The input's quantization step: 7-bit activations span the same range in half the levels.
    scales = {}
    for bits, path in artifacts.items():
        graph = torch.jit.load(str(path)).inlined_graph
        node = next(n for n in graph.nodes() if n.kind() == "aten::quantize_per_tensor")
        scales[bits] = node.inputsAt(1).toIValue()
    assert 1.6 < scales["7"] / scales["8"] < 2.4


def test_auto_on_this_machine_matches_its_cpu(tmp_path, calibration):
    model, meta = _tiny()
    out = save_int8_artifact(model, meta, tmp_path / "auto.pt", calibration, progress=False)
    recorded = read_meta(out).extra["int8"]
    assert recorded["chosen"] == "auto" and recorded["activation_bits"] == (8 if int8_vnni() else 7)


def test_8bit_artifact_is_refused_on_a_cpu_without_vnni(artifacts, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(quantize, "cpu_info", lambda: AVX2_CPU)
    with pytest.raises(ModelFileError) as err:
        open_classifier(artifacts["8"])
    msg = str(err.value)
    assert str(artifacts["8"]) in msg and "VNNI" in msg and "Fake EPYC" in msg
    assert "--int8-activations 7" in msg
    # The 7-bit one runs there, and gives answers.
    clf = open_classifier(artifacts["7"])
    assert clf.classify([np.zeros((80, 80, 3), np.uint8)], k=2)[0].best.prob > 0


def test_8bit_artifact_loads_on_a_vnni_cpu(artifacts, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(quantize, "cpu_info", lambda: VNNI_CPU)
    clf = open_classifier(artifacts["8"])
    assert clf.meta.extra["int8"]["activation_bits"] == 8


def test_artifacts_from_before_the_recipe_was_recorded_load_anywhere(artifacts, monkeypatch):
    meta = read_meta(artifacts["7"])
    old = ArtifactMeta(**{**meta.__dict__, "extra": {k: v for k, v in meta.extra.items() if k != "int8"}})
    monkeypatch.setattr(quantize, "cpu_info", lambda: AVX2_CPU)
    quantize.check_int8_cpu(old, "old.pt")   # 7-bit was the only recipe then: no error


def test_real_avx2_kernels_refuse_the_8bit_artifact(artifacts):
    """oneDNN capped to AVX2 (ONEDNN_MAX_CPU_ISA) is the AVX2 box: the CLI names the problem and exits 1."""
    image = REPO / "docs" / "replay-box-frame200.jpg"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "PYTHONPATH": str(REPO)}

    def classify(model):
        return subprocess.run([sys.executable, "-m", "checkout_cam", "classify", "--model", str(model), "--json",
                               str(image)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    proc = classify(artifacts["8"])
    assert proc.returncode != 0
    assert "need a CPU with VNNI" in proc.stderr and "--int8-activations 7" in proc.stderr
    ok = classify(artifacts["7"])
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.splitlines()[0])["top"]


def test_quantize_int8_takes_an_explicit_recipe(calibration):
    model, meta = _tiny()
    batch = torch.randn(2, 3, 64, 64)
    frozen = quantize_int8(model, [batch], 64, choose_recipe("7", VNNI_CPU))
    assert "quantized::conv2d" in str(frozen.inlined_graph)
