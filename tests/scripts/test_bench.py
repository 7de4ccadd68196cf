import importlib.util
import json
import sys

import pytest
import torch
from torchvision.models import resnet18

from checkout_cam.images import read_image
from checkout_cam.model import open_classifier
from checkout_cam.model.artifact import ArtifactMeta, save_artifact
from checkout_cam.model.quantize import save_int8_artifact
from tests.conftest import REPO


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(REPO / "scripts"))  # bench.py imports its siblings benchkit and bench_peers
    spec = importlib.util.spec_from_file_location("checkout_cam_bench", REPO / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_stats_are_medians_with_quartiles(bench):
    s = bench.Stats.of([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s.median, s.q1, s.q3, s.lo, s.hi, s.n) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)
    rate = s.scaled(lambda ms: 1000.0 / ms)   # ms -> per second reverses the order
    assert rate.median == pytest.approx(1000 / 3) and rate.lo == pytest.approx(200) and rate.hi == 1000
    assert rate.q1 == pytest.approx(250) and rate.q3 == pytest.approx(500)


def test_interleaved_rotates_the_order_and_counts_every_call(bench):
    log = []
    calls = {name: (lambda n=name: log.append(n)) for name in "abc"}
    stats = bench.interleaved(calls, rounds=3, per_round=2, warmup=1)
    assert {n: s.n for n, s in stats.items()} == {"a": 6, "b": 6, "c": 6}
    timed = log[3:]   # after one warm-up call each
    firsts = [timed[i * 6] for i in range(3)]
    assert firsts == ["a", "b", "c"]


def test_unknown_section_is_refused(bench, capsys):
    assert bench.main(["--sections", "model,nonsense"]) == 2
    assert "unknown section(s) nonsense" in capsys.readouterr().err


def test_accuracy_section_says_why_it_is_skipped(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--sections", "int8_accuracy", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(bench.FIGURE_KEYS) <= set(report["figures"])
    assert report["figures"]["int8_top1_agreement"] is None
    # The CPU's instruction sets head every report, so figures from two machines are read rightly.
    from checkout_cam.cpu import cpu_info
    assert report["figures"]["cpu_isa"] == report["machine"]["cpu_isa"] == cpu_info().isa
    printed = capsys.readouterr().out
    assert printed.startswith("cpu: ") and "needs a fine-tuned grocery model" in printed
    assert "needs a fine-tuned grocery model" in report["sections"]["int8_accuracy"]["notes"][0]


def test_accuracy_section_compares_int8_with_fp32(bench, tmp_path, grocery):
    """A tiny stand-in 'grocery' set and a 3-class model (its accuracy means nothing; the arithmetic does)."""
    data = tmp_path / "grocery"
    data.mkdir()
    names = ["Golden-Delicious", "Granny-Smith", "Pink-Lady"]
    (data / "classes.csv").write_text("Class Name (str),Class ID (int)\n" +
                                      "".join(f"{n},{i}\n" for i, n in enumerate(names)))
    lines = (grocery / "val.txt").read_text().splitlines()
    picked = [ln for ln in lines if int(ln.split(",")[1]) < 3][:6]
    (data / "val.txt").write_text("\n".join(f"{grocery / ln.split(',')[0].strip()}, {ln.split(',')[1].strip()}"
                                            for ln in picked) + "\n")
    (data / "train.txt").write_text((data / "val.txt").read_text())
    torch.manual_seed(0)
    model = resnet18(num_classes=3).eval()
    meta = ArtifactMeta(name="tiny", arch="resnet18", labels=names, weights_source="test", weights_sha256=None,
                        trained=True, input_size=64, resize_size=73)
    fp32, int8 = tmp_path / "tiny.pt", tmp_path / "tiny-int8.pt"
    save_artifact(model, meta, fp32)
    save_int8_artifact(model, meta, int8, data / "train.txt", progress=False)
    out = tmp_path / "bench.json"
    assert bench.main(["--sections", "int8_accuracy", "--data", str(data), "--model", str(fp32),
                       "--int8-model", str(int8), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    details = report["sections"]["int8_accuracy"]["details"]
    assert details["n_images"] == 6
    clf = open_classifier(fp32)
    truth = [int(ln.split(",")[1]) for ln in picked]
    images = [read_image(grocery / ln.split(",")[0].strip()) for ln in picked]
    predicted = [c.best.index for c in clf.classify(images)]
    top2 = clf.probabilities(images).topk(2, dim=1).values
    margins = (top2[:, 0] - top2[:, 1]).tolist()
    assert details["fp32_margin_below"] == {str(m): sum(x < m for x in margins) for m in (0.005, 0.01, 0.03)}
    assert 0 <= details["int8_prob_shift_mean"] < 1
    assert details["fp32_top1"] == pytest.approx(sum(p == t for p, t in zip(predicted, truth)) / 6)
    agreement = report["figures"]["int8_top1_agreement"]
    assert 0.0 <= agreement <= 1.0
    assert report["figures"]["int8_accuracy_drop_pts"] == pytest.approx(
        100 * (details["fp32_top1"] - details["int8_top1"]), abs=0.01)


def test_replay_section_measures_the_ceiling_it_reports(bench, tmp_path, videos):
    """Runs on a 12-frame cut of box.mp4 (timings mean nothing; the bookkeeping does)."""
    import cv2
    from checkout_cam.model import BACKENDS
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    cap = cv2.VideoCapture(str(videos / "box.mp4"))
    writer = None
    for _ in range(12):
        ok, frame = cap.read()
        assert ok
        if writer is None:
            writer = cv2.VideoWriter(str(data / "videos" / "box.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30.0,
                                     (frame.shape[1], frame.shape[0]))
        writer.write(frame)
    writer.release()
    cap.release()
    out = tmp_path / "bench.json"
    # --data names the grocery folder (absent here: int8 calibrates on noise); videos/ sits beside it
    assert bench.main(["--quick", "--sections", "replay", "--data", str(data / "grocery"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    section = report["sections"]["replay"]
    assert section["notes"] == []
    d = section["details"]
    streams = max(2, torch.get_num_threads())
    runs = {"naive loop", "replay fp32", "replay int8", "replay fp32 gated", "replay int8 gated",
            "model only fp32", "model only int8", f"model only fp32, {streams} streams",
            f"model only int8, {streams} streams", "replay, no model"}
    ms = d["core_ms_per_frame"]
    assert set(ms) == runs and all(v > 0 for v in ms.values())
    assert {r["variant"] for r in section["rows"]} == runs
    assert torch.get_num_threads() == report["machine"]["torch_threads"]   # the streams gave it back
    naive = next(r["median"] for r in section["rows"] if r["variant"] == "naive loop")
    for prec in ("fp32", "int8"):
        model = min(ms[f"model only {prec}"], ms[f"model only {prec}, {streams} streams"])
        need = model + ms["replay, no model"]
        assert d["ceiling_fps"][prec] == pytest.approx(d["cores"] * 1e3 / need, rel=0.01)
        assert report["figures"][f"replay_{prec}_ceiling_vs_naive"] == pytest.approx(
            d["ceiling_fps"][prec] / naive, rel=0.01)
        assert report["figures"][f"replay_{prec}_vs_naive"] > 0
    assert bench.NoModelClassifier.SUFFIX not in BACKENDS   # the bench-only backend is gone afterwards
