"""Evidence for a verdict: panels, saliency, and a page that renders in a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from truthinmotion.core.errors import ConfigError
from truthinmotion.inference.scorer import Scorer
from truthinmotion.inference.detect import detect
from truthinmotion.inference.explain import explain


@pytest.fixture(scope="module")
def scored(run_dir, clips):
    scorer = Scorer(run_dir)
    verdict, evidence = scorer.score(clips["fake"], evidence=4)
    return scorer, verdict, evidence


def test_evidence_panels_have_the_crop_size_and_saliency_sums_to_one(scored):
    scorer, verdict, ev = scored
    assert verdict.ok and ev.kinds == ["most suspicious"] * 4 + ["least suspicious"] * 2
    s = ev.crops.shape[1]
    assert ev.crops.shape == (6, s, s, 3) and s == scorer.faces_cfg.size
    for m in scorer.model.cfg.modalities:
        assert ev.pictures[m].shape == (6, s, s, 3) and ev.pictures[m].dtype == np.uint8
        assert ev.saliency[m].shape == (6, s, s) and (ev.saliency[m] >= 0).all()
        np.testing.assert_allclose(ev.saliency[m].reshape(6, -1).sum(1), 1.0, rtol=1e-4)
    # the points are the deciding face's highest and lowest scores, as in its frame_scores
    frame_scores = np.array([x for x in verdict.frame_scores if x is not None])
    np.testing.assert_allclose(ev.scores[:4], np.sort(frame_scores)[::-1][:4], rtol=1e-5)
    np.testing.assert_allclose(sorted(ev.scores[4:]), np.sort(frame_scores)[:2], rtol=1e-5)
    assert ev.frame is not None and ev.boxes and verdict.track in ev.boxes


def test_explanations_need_a_pytorch_detector():
    class Onnx:  # what an ONNX variant looks like to explain: callable, no gradients
        def __call__(self, inputs):
            raise AssertionError("not called")

    with pytest.raises(ConfigError, match="ONNX"):
        explain(Onnx(), {"flow": np.zeros((1, 3, 4, 4))}, 4)


def test_saliency_finds_an_artefact_confined_to_one_half(tmp_path):
    """A detector trained (default encodings) on fakes whose own motion is only in the left half
    of the face puts most saliency there on held-out fakes."""
    from synthetic import make_workdir
    from truthinmotion.training.dataset import VideoDataset, collate
    from truthinmotion.inference.explain import neutral_inputs
    from truthinmotion.models.detector import Detector
    from truthinmotion.training.train import TrainConfig, train

    work = make_workdir(tmp_path / "w", region="left", seed=3)
    cfg = TrainConfig(backbone="dinov2-tiny", init="random", image_size=56, workers=0, progress=False, epochs=6,
                      batch_size=6, lr=1e-3, train_points=4)
    assert train(work, cfg, tmp_path / "run").best_video_auc >= 0.9
    model = Detector.from_pretrained(tmp_path / "run").eval()
    data = model.record.data
    ds = VideoDataset(work, "test", "flow", data, model.preprocess)
    batch = collate([ds[i] for i, v in enumerate(ds.videos) if v.label == 1])
    base = neutral_inputs(("flow",), data, model.preprocess, 56)
    sal = explain(model, batch["inputs"], 56, baseline=base)["flow"]
    left = sal[:, :, :28].sum((1, 2))
    assert left.mean() >= 0.6, left  # 0.965 measured; chance is 0.5
    np.testing.assert_allclose(sal.reshape(len(sal), -1).sum(1), 1.0, rtol=1e-4)


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium package when it can)")
    return exe


def test_the_report_page_renders_in_a_browser(run_dir, clips, tmp_path):
    exe = _chromium()
    pages = tmp_path / "pages"
    verdicts = detect([clips["fake"], clips["real"]], run_dir, report_dir=pages, progress=False)
    assert all(v.ok for v in verdicts)
    page = pages / "fake.html"
    text = page.read_text()
    assert f"{verdicts[0].probability:.3f}" in text and "saliency" in text and "backbone weights" in text
    images = re.findall(r"<img [^>]*src='data:image/png;base64,", text)
    assert len(images) >= 2 + 6 * 5  # score plot, frame, and 6 rows of crop + 2 pictures + 2 saliency maps
    # Load it in headless Chromium: every image decoded (naturalWidth > 0), and a screenshot.
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", "<script>addEventListener('load', () => {const i = [...document.images];"
                                  "document.body.dataset.loaded = i.filter(x => x.naturalWidth > 0).length + '/' + "
                                  "i.length;});</script></body>"))
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-loaded="(\d+)/(\d+)"', dom)
    assert loaded and loaded.group(1) == loaded.group(2) == str(len(images)), dom[-500:]
    shot = tmp_path / "page.png"
    subprocess.run([*flags, "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_evaluate_report_shows_the_most_confidently_wrong_videos(run_dir, tmp_path):
    from truthinmotion.experiments.evaluate import evaluate
    from truthinmotion.experiments.error_analysis import error_analysis

    result = evaluate(run_dir, "test", out_dir=tmp_path / "ev", progress=False)
    assert "## Error analysis" in (tmp_path / "ev" / "report.md").read_text()
    # With a threshold of 0 every real test video is a false fake: the 3 scored highest are shown,
    # highest first, each with its worst point's crop, pictures and saliency.
    from torch.utils.data import DataLoader

    from truthinmotion.models.loading import load_detector
    from truthinmotion.training.dataset import VideoDataset, collate
    from truthinmotion.training.train import predict

    model = load_detector(run_dir)
    ds = VideoDataset(result.metrics["workdir"], "test", model.cfg.modality,
                      model.record.data, model.preprocess)
    pred = predict(model, DataLoader(ds, batch_size=4, collate_fn=collate), "cpu")
    videos = result.metrics["videos"]
    lines = error_analysis(tmp_path / "ea", model, ds, pred, videos, threshold=0.0)
    reals = sorted((v for v in videos if v["label"] == 0), key=lambda v: -v["score"])[:3]
    shown = [ln for ln in lines if ln.startswith("- `")]
    assert [ln.split("`")[1] for ln in shown] == [v["video_id"] for v in reals]
    assert "Missed fakes" not in "\n".join(lines)
    import cv2

    for v in reals:
        for name in ("crop", "flow", "depth", "flow-saliency", "depth-saliency"):
            img = cv2.imread(str(tmp_path / "ea" / "errors" / f"{v['video_id']}-{name}.png"))
            assert img is not None and img.shape[:2] == (56, 56), name


def test_evidence_of_an_int8_detector_with_and_without_its_source(run_dir, clips, tmp_path):
    """Issue 27 #5: an ONNX int8 detector's evidence takes saliency from the PyTorch detector it
    was made from while that is at hand with the same weights, and otherwise comes without
    saliency, with a note that names no server path."""
    import torch

    from truthinmotion.experiments.compress import compress
    from truthinmotion.models.detector import Detector
    from truthinmotion.reports.page import write_report

    source = tmp_path / "source"
    shutil.copytree(run_dir, source)
    compress(source, "int8", tmp_path / "int8")
    scorer = Scorer(tmp_path / "int8")
    verdict, ev = scorer.score(clips["fake"], evidence=2)
    assert verdict.ok and verdict.runtime["detector"] == "onnxruntime int8"
    assert set(ev.saliency) == set(scorer.model.cfg.modalities) and not ev.note
    # the saliency is the source's own: an fp32 ONNX copy (which ranks the points as PyTorch does)
    # shows the same maps as the source detector explained directly
    compress(source, "onnx", tmp_path / "onnx")
    _, got = Scorer(tmp_path / "onnx").score(clips["fake"], evidence=2)
    _, ref = Scorer(source, runtime="torch").score(clips["fake"], evidence=2)
    assert list(got.points) == list(ref.points)
    for m in ref.saliency:
        np.testing.assert_allclose(got.saliency[m], ref.saliency[m], atol=1e-5)

    # The source trained again (other weights): its gradients would explain another model.
    model = Detector.from_pretrained(source)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.add_(1.0)
    model.save_pretrained(source / "best")
    verdict, ev = Scorer(tmp_path / "int8").score(clips["fake"], evidence=2)
    assert verdict.ok and ev.saliency == {} and "no saliency" in ev.note

    shutil.rmtree(source)  # and gone
    scorer = Scorer(tmp_path / "int8")
    verdict, ev = scorer.score(clips["fake"], evidence=2)
    assert verdict.ok and ev.saliency == {} and "no saliency" in ev.note and str(tmp_path) not in ev.note
    assert ev.pictures and len(ev.points) == 4  # the rest of the evidence is there
    page = write_report(verdict, ev, scorer.model_info, tmp_path / "page.html").read_text()
    assert "no saliency" in page and "saliency</figcaption>" not in page


def test_boxes_are_red_at_the_detectors_threshold_not_at_one_half():
    """Issue 27 #15: a face labelled fake at a threshold below 0.5 gets a red box."""
    from truthinmotion.reports.page import Evidence, _frame_with_boxes

    frame = np.zeros((480, 640, 3), np.uint8)
    ev = Evidence(np.zeros(0, int), np.zeros(0), [], np.zeros((0, 4, 4, 3), np.uint8), {}, {}, frame, 0,
                  {0: [100.0, 100.0, 200.0, 200.0], 1: [400.0, 100.0, 500.0, 200.0]})
    tracks = [{"track": 0, "probability": 0.3, "label": "fake"}, {"track": 1, "probability": 0.6, "label": "real"}]
    img = _frame_with_boxes(ev, tracks)  # RGB
    left, right = img[150, 100], img[150, 400]  # a pixel on each box's left edge
    assert left[0] > 200 and left[1] < 50  # red: fake at the detector's threshold, though p < 0.5
    assert right[1] > 100 and right[0] < 50  # green: real, though p > 0.5


def test_plots_never_touch_pyplot_and_draw_from_threads(tmp_path):
    """Issue 27 #12: the service draws pages from several threads; pyplot's state is not safe there."""
    import sys

    code = ("import sys\n"
            "from types import SimpleNamespace as V\n"
            "from concurrent.futures import ThreadPoolExecutor\n"
            "from truthinmotion.reports.plots import plot_scores\n"
            "def one(i):\n"
            "    v = V(video=f'v{i}.mp4', faces={'fps': 25.0}, frame_index=list(range(0, 64, 2)),\n"
            "          frame_scores=[((i + j) % 10) / 10 for j in range(32)], score_threshold=0.5,\n"
            "          aggregation='mean', score=0.4, probability=0.4, label='real')\n"
            f"    return plot_scores(v, r'{tmp_path}' + f'/p{{i}}.png').stat().st_size\n"
            "with ThreadPoolExecutor(8) as ex:\n"
            "    sizes = list(ex.map(one, range(16)))\n"
            "assert all(s > 5000 for s in sizes), sizes\n"
            "assert 'matplotlib.pyplot' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(list(tmp_path.glob("p*.png"))) == 16
