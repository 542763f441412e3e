from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from truthinmotion.features.depth import DepthConfig
from truthinmotion.models.architecture import Preprocess
from truthinmotion.models.record import DetectorRecord

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
        assert len(v["frame_scores"]) == 16 and v["faces"]["time_points_with_face"] >= 14
    assert len(list((tmp_path / "plots").glob("*.png"))) == 9
    assert len((tmp_path / "v.csv").read_text().strip().splitlines()) == 12


def test_detect_exit_codes_on_generated_clips(run_dir, clips, tmp_path, capsys):
    assert main(["detect", str(clips["real"]), str(clips["fake"]), "--model", str(run_dir), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "real.mp4:" in printed and "fake.mp4:" in printed and "p=" in printed
    assert main(["detect", str(tmp_path / "missing.mp4"), "--model", str(run_dir)]) == 2


def test_random_depth_cannot_be_rebuilt_for_detect(tmp_path):
    from truthinmotion.models.detector import Detector
    from truthinmotion.models.architecture import DetectorConfig

    cfg = DetectorConfig(backbone="dinov2-tiny", modality="depth")
    record = DetectorRecord(cfg, {}, depth=DepthConfig(model="depth-anything-v2-tiny", init="random", input_size=56))
    model = Detector.build(cfg, init="random", record=record)
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="randomly initialised"):
        Scorer(tmp_path / "m")


def test_onnx_runtime_gives_pytorchs_verdicts_and_exports_once(run_dir, clips, onnx_cache):
    """The default CPU runtime (ONNX Runtime) scores what PyTorch scores, from an export made once
    and found again in the cache."""
    from truthinmotion.models.loading import OnnxDetector

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

    from truthinmotion.models.loading import OnnxDetector
    from truthinmotion.models.detector import Detector
    from truthinmotion.models.architecture import DetectorConfig
    from truthinmotion.backends.onnxrun import fingerprint, resolve_runtime

    monkeypatch.setenv("TIM_CACHE_DIR", str(tmp_path / "cache"))
    cfg = DetectorConfig(backbone="dinov2-tiny", modality="flow")
    record = DetectorRecord(cfg, {}, preprocess=Preprocess(size=56))
    torch.manual_seed(0)
    a = Detector.build(cfg, init="random", record=record).eval()
    torch.manual_seed(1)
    b = Detector.build(cfg, init="random", record=record).eval()
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
    rows = first_round([32, 5], seed=7)
    assert len(rows) == 16 + 3 and set(rows[:16]) < set(range(32)) and set(rows[16:]) < set(range(32, 37))
    # The draw is the seed's: repeatable from the recorded seed, and another seed draws others.
    assert (first_round([32, 5], seed=7) == rows).all()
    assert len({tuple(first_round([32], seed=s)) for s in range(20)}) > 15
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

    from truthinmotion.inference.sequential import first_round

    full = Scorer(run_dir)
    stop = Scorer(run_dir, early_stop=0.01)
    seeds = set()
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
            # each video's points are drawn from a seed of its own, recorded so they can be redrawn
            if expect_stop:  # (one face in these clips)
                seeds.add(v.early_stop["seed"])
                points = [i for i, x in enumerate(ref.frame_scores) if x is not None]
                drawn = first_round([len(points)], v.early_stop["seed"])
                assert [points[r] for r in drawn] == [i for i, x in enumerate(v.frame_scores) if x is not None]
    assert len(seeds) == len(clips)  # not one fixed draw for every video
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


def test_early_stop_with_one_video_decided_and_one_open_in_a_batch(run_dir, clips, monkeypatch):
    """Issue 27 #1: a video decided after the first round reaches the second scoring call with no
    rows; it must keep its verdict, and the other video must get all its points scored."""
    import truthinmotion.inference.scorer as scorer_mod

    stop = Scorer(run_dir, early_stop=0.01)
    calls = []

    def decide_first_only(probs, counts, threshold, delta):
        calls.append(len(calls))
        return [len(calls) != 1] * len(counts)  # the first video is decided, the second is not

    monkeypatch.setattr(scorer_mod, "undecided", decide_first_only)
    items = [stop.prepare(clips["real"]), stop.prepare(clips["fake"])]
    (a, _), (b, _) = stop.finish(items)
    assert a.ok and b.ok, (a.reason, b.reason)
    assert a.early_stop["stopped"] and a.early_stop["time_points_scored"] < a.early_stop["of"]
    assert not b.early_stop["stopped"] and b.early_stop["time_points_scored"] == b.early_stop["of"]


def test_a_video_that_breaks_the_model_stage_costs_only_its_own_verdict(run_dir, clips):
    """Issue 27 #1: a failure in a group's scoring is narrowed down to the video that causes it."""
    scorer = Scorer(run_dir)
    good, bad = scorer.prepare(clips["real"]), scorer.prepare(clips["fake"])
    bad.arrays["flow"] = bad.arrays["flow"][..., 0]  # a flow field without its channels: cannot be encoded
    verdicts = [v for v, _ in scorer.finish([good, bad])]
    assert verdicts[0].ok and verdicts[0].video == str(clips["real"])
    assert verdicts[1].status == "error" and verdicts[1].video == str(clips["fake"]) and verdicts[1].reason
    assert verdicts[0].score == pytest.approx(scorer(clips["real"]).score, abs=1e-6)


def test_outputs_keep_what_finished_when_detect_is_stopped(run_dir, clips, tmp_path, monkeypatch):
    """Issue 27 #1: --json and --csv are written with the verdicts so far when a batch stops."""
    import truthinmotion.inference.detect as detect_mod

    def interrupted(verdict, path):  # Ctrl-C while the first video's plot is drawn
        raise KeyboardInterrupt

    monkeypatch.setattr(detect_mod, "plot_scores", interrupted)
    out, table = tmp_path / "v.json", tmp_path / "v.csv"
    with pytest.raises(KeyboardInterrupt):
        detect_mod.detect([clips["real"], clips["fake"]], run_dir, json_out=out, csv_out=table,
                          plot_dir=tmp_path / "plots", progress=False)
    kept = json.loads(out.read_text())
    assert [v["video"] for v in kept] == [str(clips["real"])] and kept[0]["status"] == "ok"
    assert len(table.read_text().splitlines()) == 1 + len(kept)


def test_rerun_with_every_verdict_done_and_workers(run_dir, clips, tmp_path):
    """Issue 27 #6: a re-run whose videos all have verdicts in --jsonl starts no workers."""
    from truthinmotion.inference.detect import detect

    lines = tmp_path / "v.jsonl"
    first = detect(list(clips.values()), run_dir, jsonl_out=lines, progress=False)
    again = detect(list(clips.values()), run_dir, jsonl_out=lines, workers=2, progress=False)
    assert [v.score for v in again] == [v.score for v in first] and len(lines.read_text().splitlines()) == 2


def test_output_names_never_collide():
    """Issue 27 #13: a.mp4 and a.avi in one folder get their own plot and page."""
    from truthinmotion.inference.detect import _plot_names

    paths = [Path("d/a.mp4"), Path("d/a.avi"), Path("e/a.mp4"), Path("d/b.mp4")]
    names = _plot_names(paths)
    assert len(set(names.values())) == len(paths) and names[Path("d/b.mp4")] == "b"
    assert names[Path("d/a.avi")] == "a-avi"


def test_a_detect_that_fails_before_any_verdict_keeps_earlier_outputs(clips, tmp_path):
    """A bad --model fails inside the batch, before any verdict: an earlier --json is not replaced by []."""
    from truthinmotion.inference.detect import detect

    out = tmp_path / "v.json"
    out.write_text('["an earlier run"]')
    broken = tmp_path / "run" / "best"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="damaged"):
        detect([clips["real"]], tmp_path / "run", json_out=out, progress=False)
    assert out.read_text() == '["an earlier run"]'


def test_an_error_verdict_is_scored_again_on_a_rerun(run_dir, clips, tmp_path):
    """A model-stage failure (memory, a device) may pass: a re-run scores that video again, and
    keeps every other status as final."""
    from truthinmotion.inference.detect import detect

    lines = tmp_path / "v.jsonl"
    first = detect([clips["real"], clips["fake"]], run_dir, jsonl_out=lines, progress=False)
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    records[0].update(status="error", reason="RuntimeError: out of memory", probability=None, score=None)
    lines.write_text("".join(json.dumps(r) + "\n" for r in records))
    again = detect([clips["real"], clips["fake"]], run_dir, jsonl_out=lines, progress=False)
    assert again[0].ok and again[0].score == pytest.approx(first[0].score, abs=1e-6)
    assert again[1].score == first[1].score  # read back, not scored again
    assert len(lines.read_text().splitlines()) == 3  # the new verdict appended
