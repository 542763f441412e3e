from __future__ import annotations

import json
import shutil

import pytest

from conftest import DFDC, FFPP, need_shared
from truthinmotion.apps.cli import main
from truthinmotion.core.errors import ConfigError
from truthinmotion.inference.scorer import Scorer


@pytest.mark.slow
def test_detect_real_videos_and_bad_inputs(run_dir, tmp_path, faceless):
    need_shared()
    videos = tmp_path / "videos"
    shutil.copytree(FFPP, videos / "ffpp")
    shutil.copytree(DFDC, videos / "dfdc")
    (videos / "corrupt.mp4").write_text("not a video at all\n" * 20)
    shutil.copy(faceless, videos / "noface.mp4")
    out = tmp_path / "verdicts.json"
    code = main(["detect", str(videos), "--model", str(run_dir), "--json", str(out),
                 "--csv", str(tmp_path / "v.csv"), "--plot", str(tmp_path / "plots"), "-q"])
    assert code == 1  # two videos could not be scored
    verdicts = {v["video"].rsplit("/", 1)[-1]: v for v in json.loads(out.read_text())}
    assert len(verdicts) == 11
    assert verdicts["corrupt.mp4"]["status"] == "unreadable" and verdicts["corrupt.mp4"]["probability"] is None
    assert verdicts["noface.mp4"]["status"] == "no_face"
    good = [v for k, v in verdicts.items() if k not in ("corrupt.mp4", "noface.mp4")]
    assert len(good) == 9
    for v in good:
        assert v["status"] == "ok" and 0.0 <= v["probability"] <= 1.0
        assert v["label"] == ("fake" if v["probability"] >= v["threshold"] else "real")
        assert set(v["timings"]) == {"faces", "flow", "depth", "detector", "total"}
        assert v["timings"]["total"] >= v["timings"]["faces"] > 0
        assert len(v["frame_scores"]) == 32 and v["faces"]["time_points_with_face"] >= 29
    assert len(list((tmp_path / "plots").glob("*.png"))) == 9
    assert len((tmp_path / "v.csv").read_text().strip().splitlines()) == 12


def test_detect_exit_codes_on_generated_clips(run_dir, clips, tmp_path, capsys):
    assert main(["detect", str(clips["real"]), str(clips["fake"]), "--model", str(run_dir), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "real.mp4:" in printed and "fake.mp4:" in printed and "p=" in printed
    assert main(["detect", str(tmp_path / "missing.mp4"), "--model", str(run_dir)]) == 2


def test_random_depth_cannot_be_rebuilt_for_detect(tmp_path):
    from truthinmotion.models.detector.detector import Detector, DetectorConfig

    model = Detector.build(DetectorConfig(backbone="dinov2-tiny", modality="depth"), init="random",
                           extra={"features": {"depth": {"model": "depth-anything-v2-tiny", "init": "random",
                                                         "input_size": 56}}})
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="randomly initialised"):
        Scorer(tmp_path / "m")


def test_onnx_runtime_gives_pytorchs_verdicts_and_exports_once(run_dir, clips, onnx_cache):
    """The default CPU runtime (ONNX Runtime) scores what PyTorch scores, from an export made once
    and found again in the cache."""
    from truthinmotion.models.detector.loading import OnnxDetector

    before = set(onnx_cache.rglob("*.onnx"))
    fast = Scorer(run_dir)  # auto: ONNX Runtime on the CPU
    assert isinstance(fast.model, OnnxDetector) and fast.depth.session is not None
    exports = set(onnx_cache.rglob("*.onnx"))
    made = {p.name.split("-")[0] for p in exports - before}
    assert made <= {"detector", "depth"} and {p.name.split("-")[0] for p in exports} == {"detector", "depth"}
    files = {p: p.stat().st_ino for p in exports}  # an export is written under another name, then renamed
    again = Scorer(run_dir, runtime="onnx")
    assert {p: p.stat().st_ino for p in onnx_cache.rglob("*.onnx")} == files  # reused, not re-exported
    slow = Scorer(run_dir, runtime="torch")
    assert slow.depth.session is None and not isinstance(slow.model, OnnxDetector)
    for video in clips.values():
        a, b, c = fast(video), again(video), slow(video)
        assert a.ok and c.ok
        assert a.runtime == {"detector": "onnxruntime fp32", "depth": "onnxruntime fp32"}
        assert c.runtime == {"detector": "torch fp32", "depth": "torch fp32"}
        assert a.frame_scores == b.frame_scores
        assert abs(a.score - c.score) < 1e-5
        for x, y in zip(a.frame_scores, c.frame_scores):
            assert (x is None) == (y is None) and (x is None or abs(x - y) < 1e-5)


def test_onnx_cache_follows_the_weights(tmp_path, monkeypatch):
    """Another model (other weights, same architecture) gets its own export; an unwritable cache
    exports to a temporary folder instead of failing."""
    import torch

    from truthinmotion.models.detector.loading import OnnxDetector
    from truthinmotion.models.detector.detector import Detector, DetectorConfig
    from truthinmotion.backends.onnxrun import fingerprint, resolve_runtime

    monkeypatch.setenv("TIM_CACHE_DIR", str(tmp_path / "cache"))
    cfg = DetectorConfig(backbone="dinov2-tiny", modality="flow")
    extra = {"preprocess": {"size": 56}}
    torch.manual_seed(0)
    a = Detector.build(cfg, init="random", extra=extra).eval()
    torch.manual_seed(1)
    b = Detector.build(cfg, init="random", extra=extra).eval()
    assert fingerprint(a) != fingerprint(b)
    x = {"flow": torch.randn(3, 3, 56, 56)}
    for model in (a, b):
        with torch.no_grad():
            ref = torch.sigmoid(model(x).logit)
        got = torch.sigmoid(OnnxDetector.exported(model)(x).logit)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert len(list((tmp_path / "cache" / "onnx").glob("detector-*.onnx"))) == 2
    (tmp_path / "blocked").write_text("a file, not a folder")
    monkeypatch.setenv("TIM_CACHE_DIR", str(tmp_path / "blocked"))
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(OnnxDetector.exported(a)(x).logit), torch.sigmoid(a(x).logit),
                                   atol=1e-5, rtol=0)
    assert resolve_runtime("auto", "cpu") == "onnx" and resolve_runtime("auto", "cuda") == "torch"
    with pytest.raises(ConfigError, match="runtime"):
        resolve_runtime("tensorrt", "cpu")
    with pytest.raises(ConfigError, match="--runtime torch"):
        resolve_runtime("onnx", "cuda")


def test_early_stop_bound_holds_and_is_the_stated_one():
    """Hoeffding-Serfling at the stated values, and the rule wrong no more often than its bound
    over many populations and random orders, most of them near the threshold."""
    import math

    import numpy as np

    from truthinmotion.inference.sequential import first_round, margin_needed, undecided

    assert margin_needed(16, 32, 0.01) == pytest.approx(math.sqrt(math.log(100) * (1 - 15 / 32) / 32))
    assert margin_needed(32, 32, 0.01) == 0.0
    assert margin_needed(16, 32, 0.001) > margin_needed(16, 32, 0.01) > margin_needed(24, 32, 0.01)
    rows = first_round([32, 5])
    assert len(rows) == 16 + 3 and set(rows[:16]) < set(range(32)) and set(rows[16:]) < set(range(32, 37))
    rng = np.random.default_rng(1)
    delta, wrong, stopped, trials = 0.05, 0, 0, 4000
    for _ in range(trials):
        pop = rng.beta(*rng.uniform(0.3, 3, 2), size=32)
        threshold = float(np.clip(pop.mean() + rng.normal(0, 0.15), 0.05, 0.95))
        first = rng.permutation(32)[:16]
        probs = np.full(32, np.nan)
        probs[first] = pop[first]
        if not undecided(probs, [32], threshold, delta)[0]:
            stopped += 1
            wrong += (probs[first].mean() >= threshold) != (pop.mean() >= threshold)
    assert stopped > trials // 10  # the rule does stop
    assert wrong <= delta * stopped


def test_early_stop_scores_half_when_clear_and_all_when_not(run_dir, clips):
    """Far from the threshold a face is decided on half its points (the others unscored); at the
    threshold every point is scored and the verdict is the one without early stop."""
    import dataclasses

    import numpy as np

    full = Scorer(run_dir)
    stop = Scorer(run_dir, early_stop=0.01)
    for video in clips.values():
        ref = full(video)
        scored = [x for x in ref.frame_scores if x is not None]
        for threshold, expect_stop in ((ref.score - 0.45, True), (ref.score, False)):
            stop.rule = dataclasses.replace(full.rule, threshold=threshold)
            v = stop(video)
            kept = [(x, y) for x, y in zip(v.frame_scores, ref.frame_scores) if x is not None]
            assert v.early_stop["stopped"] is expect_stop and v.early_stop["of"] == len(scored)
            assert all(abs(x - y) < 1e-6 for x, y in kept)
            half = -(-len(scored) // 2)
            assert v.early_stop["time_points_scored"] == len(kept) == (half if expect_stop else len(scored))
            assert v.score == pytest.approx(float(np.mean([x for x, _ in kept])), abs=1e-6)
            assert v.label == "fake"  # the mean is at or above these thresholds either way
            assert set(v.timings) >= {"depth", "detector", "total"}
    with pytest.raises(ConfigError, match="mean"):
        Scorer(run_dir, aggregation="max", early_stop=0.01)
    with pytest.raises(ConfigError, match="evidence"):
        stop.score(clips["real"], evidence=2)


def test_early_stop_from_the_command_line(run_dir, clips, tmp_path, capsys):
    out = tmp_path / "v.json"
    assert main(["detect", str(clips["real"]), "--model", str(run_dir), "--early-stop", "0.01", "--json", str(out),
                 "-q"]) == 0
    (verdict,) = json.loads(out.read_text())
    assert verdict["early_stop"]["error_bound"] == 0.01 and verdict["early_stop"]["of"] > 0
    with pytest.raises(SystemExit):
        main(["detect", str(clips["real"]), "--model", str(run_dir), "--early-stop", "1.5"])
    assert main(["detect", str(clips["real"]), "--model", str(run_dir), "--early-stop", "0.01", "--report",
                 str(tmp_path / "pages")]) == 2
    assert "--early-stop" in capsys.readouterr().err and not (tmp_path / "pages").exists()


def test_onnx_cache_drops_the_least_recently_used_exports(tmp_path):
    import os

    from truthinmotion.backends.onnxrun import prune

    files = []
    for i, name in enumerate(["old", "mid", "new", "kept"]):
        f = tmp_path / f"{name}.onnx"
        f.write_bytes(b"x" * 1000)
        os.utime(f, (1000 + i, 1000 + i))
        files.append(f)
    os.utime(files[3], (10, 10))  # the oldest, but the one just exported
    removed = prune(tmp_path, keep=files[3], limit_gb=2500 / 1e9)
    assert removed == [files[0], files[1]]
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["kept.onnx", "new.onnx"]
    assert prune(tmp_path, keep=files[3], limit_gb=1.0) == []


def test_depth_precision_override_scores_near_the_detectors_own(run_dir, clips):
    """A detector trained on fp32 depth, scored with int8 depth: the speed option moves the
    scores a little, and says so in its depth settings."""
    ref, fast = Scorer(run_dir), Scorer(run_dir, depth_precision="int8")
    assert ref.depth.cfg.precision == "fp32" and fast.depth.cfg.precision == "int8"
    for video in clips.values():
        a, b = ref(video), fast(video)
        assert a.ok and b.ok and abs(a.score - b.score) < 0.05
        assert b.runtime["depth"] == "onnxruntime int8" and a.runtime["depth"] == "onnxruntime fp32"
