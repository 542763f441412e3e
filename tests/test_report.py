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
    from truthinmotion.models.detector.inputs import DataConfig
    from truthinmotion.training.dataset import VideoDataset, collate
    from truthinmotion.inference.explain import neutral_inputs
    from truthinmotion.models.detector.detector import Detector
    from truthinmotion.training.train import TrainConfig, train

    work = make_workdir(tmp_path / "w", region="left", seed=3)
    cfg = TrainConfig(backbone="dinov2-tiny", init="random", image_size=56, workers=0, progress=False, epochs=6,
                      batch_size=6, lr=1e-3, train_points=4)
    assert train(work, cfg, tmp_path / "run").best_video_auc >= 0.9
    model = Detector.from_pretrained(tmp_path / "run").eval()
    data = DataConfig.from_saved(model.extra["data"])
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

    from truthinmotion.models.detector.loading import load_detector
    from truthinmotion.models.detector.inputs import DataConfig
    from truthinmotion.training.dataset import VideoDataset, collate
    from truthinmotion.training.train import predict

    model = load_detector(run_dir)
    ds = VideoDataset(result.metrics["workdir"], "test", model.cfg.modality,
                      DataConfig.from_saved(model.extra["data"]), model.preprocess)
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
