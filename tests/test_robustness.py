"""Robustness (truthinmotion.media.perturb, tim robustness): each DeeperForensics-1.0 perturbation
does at levels 1 and 5 what its definition says, on pixels; encodes go through libx264 with the
settings recorded; level 5 departs further from the source than level 1."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from truthinmotion.core.errors import ConfigError, StageError
from truthinmotion.media.clips import synth_clip, write_video
from truthinmotion.media.perturb import (INSTALL, PERTURBATIONS, parse_levels, parse_perturbations, perturb_frame,
                                         perturb_video, psnr_frames, require_av)
from truthinmotion.media.video import probe, sample_points

NO_AV = "PyAV is not installed: " + INSTALL


def _need_av() -> None:
    try:
        import av  # noqa: F401
    except ImportError:
        pytest.skip(NO_AV)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _photo(size: int = 256) -> np.ndarray:
    """A colourful BGR frame: the generated clip's portrait."""
    return synth_clip(False, frames=1, size=size, seed=0)[0][..., ::-1].copy()


def _luma(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb).astype(np.float64)


def test_saturation_scales_chroma_and_level_5_is_grey():
    img = _photo()
    ycc = _luma(img)
    one, _ = perturb_frame("cs", 1, img, _rng())
    five, _ = perturb_frame("cs", 5, img, _rng())
    spread = five.astype(int).max(2) - five.astype(int).min(2)
    assert spread.max() <= 1  # chroma 0.0: B = G = R up to rounding
    assert np.abs(img.astype(int).max(2) - img.astype(int).min(2)).mean() > 20  # the source is colourful
    chroma_in, chroma_out = ycc[..., 1:] - 128, _luma(one)[..., 1:] - 128
    assert chroma_out.std() / chroma_in.std() == pytest.approx(0.4, abs=0.02)
    assert np.abs(_luma(one)[..., 0] - ycc[..., 0]).mean() < 1.0  # brightness kept


def test_contrast_scales_and_truncates_every_pixel():
    img = _photo()
    for level, c in ((1, 0.85), (5, 0.35)):
        out, _ = perturb_frame("cc", level, img, _rng())
        assert np.array_equal(out, np.floor(img.astype(np.float64) * c + 1e-6).astype(np.uint8))


@pytest.mark.parametrize("level,side,blocks", [(1, 1024, 64), (5, 512, 160), (1, 255, 0)])
def test_block_wise_places_grey_8x8_blocks_by_the_short_side(level, side, blocks):
    rng = _rng(1)
    img = rng.integers(0, 256, (side, side + 100, 3)).astype(np.uint8)
    img[img == 128] = 127  # so that grey marks a block
    out, drawn = perturb_frame("bw", level, img, _rng(2))
    assert drawn["blocks"] == blocks
    changed = (out != img).any(2)
    grey = (out == 128).all(2)
    assert not (changed & ~grey).any()  # only grey pixels were written
    if blocks == 0:
        assert not changed.any()
        return
    kernel = np.ones((8, 8), np.uint8)
    opened = cv2.dilate(cv2.erode(grey.astype(np.uint8), kernel, anchor=(0, 0)), kernel, anchor=(7, 7))
    assert np.array_equal(opened.astype(bool), grey)  # a union of whole 8x8 squares
    assert 0.8 * blocks * 64 <= grey.sum() <= blocks * 64  # overlaps only lose area
    again, _ = perturb_frame("bw", level, img, _rng(2))
    other, _ = perturb_frame("bw", level, img, _rng(3))
    assert np.array_equal(again, out) and not np.array_equal(other, out)  # seeded


def test_noise_in_ycbcr_has_the_defined_variance():
    flat = np.full((256, 256, 3), 128, np.uint8)
    for level, var in ((1, 0.001), (5, 0.05)):
        out, _ = perturb_frame("gnc", level, flat, _rng(level))
        dy = _luma(out)[..., 0] - 128
        # sd sqrt(var) on DeeperForensics' [0, 1] video-range luma: 255 * 255 / 219 grey levels per unit
        want = np.sqrt(var) * 255 * 255 / 219
        if level == 1:
            assert dy.std() == pytest.approx(want, rel=0.06)
        else:  # clipped at 0 and 255 beyond about 2 sd
            assert 0.6 * want < dy.std() < want
    low, _ = perturb_frame("gnc", 1, flat, _rng(7))
    assert not np.array_equal(low, perturb_frame("gnc", 1, flat, _rng(8))[0])


def test_blur_kernel_sizes_and_sigma():
    impulse = np.zeros((64, 64, 3), np.float32)
    impulse[32, 32] = 1e6
    for level, k in ((1, 7), (5, 21)):
        out, drawn = perturb_frame("gb", level, impulse, _rng())
        rows, cols = np.nonzero(out[..., 0])
        assert rows.max() - rows.min() + 1 == k and cols.max() - cols.min() + 1 == k
        profile = out[32, 32 - k // 2:32 + k // 2 + 1, 0].astype(np.float64)
        # a Gaussian of sd k/6: log-profile is a parabola of curvature -1/sigma^2
        x = np.arange(k) - k // 2
        curvature = np.polyfit(x, np.log(profile), 2)[0] * 2
        assert curvature == pytest.approx(-1 / (k / 6) ** 2, rel=0.01) and drawn["sigma"] == k / 6


def test_pixelation_keeps_only_a_grid_of_w_over_f_samples():
    img = _rng(4).integers(0, 256, (240, 300, 3)).astype(np.uint8)
    rough = {}
    for level, f in ((1, 2), (5, 6)):
        out, drawn = perturb_frame("px", level, img, _rng())
        assert out.shape == img.shape and drawn["small"] == [300 // f, 240 // f]
        rough[level] = np.abs(np.diff(out.astype(int), axis=1)).mean()
    assert rough[5] < rough[1] < np.abs(np.diff(img.astype(int), axis=1)).mean()


def test_names_and_levels_parse_and_bad_ones_say_what_is_allowed():
    assert parse_perturbations("all") == tuple(PERTURBATIONS)
    assert parse_perturbations("VC,gb") == ("gb", "vc")
    assert parse_levels("1-5") == (1, 2, 3, 4, 5) and parse_levels("5,1") == (1, 5)
    with pytest.raises(ConfigError, match="jpeg.*px \\(pixelation\\)"):
        parse_perturbations("jpeg")
    with pytest.raises(ConfigError, match="levels are 1 to 5"):
        parse_levels("0-3")


def test_without_pyav_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    with pytest.raises(ConfigError, match="pip install 'truthinmotion\\[robustness\\]'"):
        require_av()
    with pytest.raises(ConfigError, match="needs PyAV"):
        perturb_video(tmp_path / "a.mp4", tmp_path / "b.mp4", "vc", 1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("perturb") / "src.mp4", synth_clip(False, frames=10, size=256, seed=1))


def test_every_video_perturbation_level_5_departs_further_and_encodes_are_real(clip, tmp_path):
    """All nine types at their first and last level: frame count kept, PSNR over the sampled frames
    lower at the last level; libx264's own record of its settings in the stream says the CRF and
    the bitrate cap; CRF 40 is smaller than CRF 30; resize gives the lines asked and refuses to
    enlarge."""
    _need_av()
    points = sample_points(10, 4)
    made = {}
    for code, p in PERTURBATIONS.items():
        for level in (1, len(p.params)):
            if code == "rs" and level == 1:
                with pytest.raises(StageError, match="would enlarge"):
                    perturb_video(clip, tmp_path / "x.mp4", code, level)
                continue
            out = perturb_video(clip, tmp_path / f"{code}{level}.mp4", code, level, seed=5)
            info = probe(out.path)
            assert (info.frames, out.frames) == (10, 10) and info.fps == pytest.approx(25.0)
            made[code, level] = (out, psnr_frames(clip, out.path, points), out.path.read_bytes())
            assert made[code, level][1] < 45, (code, level)  # each copy visibly differs
    for code, p in PERTURBATIONS.items():
        if code != "rs":
            assert made[code, len(p.params)][1] < made[code, 1][1], code
    vc30, vc40 = made["vc", 1][2], made["vc", 5][2]
    assert b"crf=30.0" in vc30 and b"crf=40.0" in vc40 and len(vc40) < len(vc30)
    assert b"vbv_maxrate=100 " in made["br", 5][2] and b"vbv_maxrate=1600 " in made["br", 1][2]
    # the VBV model: 0.4 s at the cap plus at most the 2 s buffer; the cap bites at level 5
    assert len(made["br", 5][2]) * 8 <= 100_000 * (0.4 + 2) < len(made["br", 1][2]) * 8
    # frame types are written losslessly: the copy holds exactly the perturbed frames
    from truthinmotion.media.video import read_frames

    source = dict(read_frames(clip, points, rgb=False))
    copy = dict(read_frames(made["cs", 1][0].path, points, rgb=False))
    assert all(np.array_equal(copy[i], perturb_frame("cs", 1, source[i], _rng())[0]) for i in points)
    assert made["gb", 5][0].params["carrier"] == {"codec": "libx264rgb", "crf": 0, "preset": "ultrafast"}
    assert made["rs", 3][0].height == 240 and probe(made["rs", 3][0].path).height == 240
    assert made["vc", 5][0].params == {"type": "vc", "name": "video compression", "level": 5, "parameter": 40,
                                       "unit": "H.264 CRF", "seed": 5, "codec": "libx264", "crf": 40,
                                       "preset": "medium"}
    again = perturb_video(clip, tmp_path / "again.mp4", "gnc", 5, seed=5)
    assert again.path.read_bytes() == made["gnc", 5][2]  # seeded: the same copy


def _tiny_clips_and_settings(root: Path, train_extra: str = "") -> None:
    """Four real and four fake generated clips under ``root/data`` and ``root/tim.yaml``: settings
    of a tiny flow detector trained in seconds (``train_extra``: more keys of its train section)."""
    for i in range(4):
        for kind, fake in (("real", False), ("fake", True)):
            write_video(root / "data" / kind / f"{kind[0]}{i}.mp4", synth_clip(fake, frames=8, size=128, seed=i))
    (root / "tim.yaml").write_text(
        "index: {format: folder, ratios: [0.5, 0.25, 0.25]}\nfaces: {num_points: 3, size: 56}\n"
        "train: {backbone: dinov2-tiny, init: random, image_size: 56, modality: flow, epochs: 1, batch_size: 4,"
        f" train_points: 3, workers: 0, lr: 0.001{train_extra}}}\n")


def test_tim_robustness_end_to_end_resumes_matches_evaluate_and_leaks_nothing(tmp_path, capsys, monkeypatch):
    """A tiny detector trained by `tim run` on generated clips; `tim robustness` on its test videos:
    the clean row is `tim evaluate`'s figures, video by video; an interrupted run resumes without
    redoing a finished cell; a copy that cannot be made is a recorded status; nothing enters the
    work directory, and --keep-videos inside it is refused."""
    import json

    from truthinmotion.apps.cli import main
    from truthinmotion.data.index import read_manifest
    from truthinmotion.experiments import robustness
    from sklearn.metrics import roc_auc_score

    _need_av()
    _tiny_clips_and_settings(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "data"), "-o", str(out), "--config", str(tmp_path / "tim.yaml"), "--name",
                 "r", "-q"]) == 0
    capsys.readouterr()
    run, work = out / "runs" / "r", out / "work"
    files = {p: p.stat().st_mtime_ns for p in work.rglob("*")}
    args = ["robustness", str(run), "--perturbations", "gb,rs", "--levels", "1,5", "-q"]
    with pytest.raises(ConfigError, match="inside the work directory"):
        robustness.run_robustness(run, keep_videos=work / "copies", progress=False)

    made = []
    real_perturb = robustness.perturb_video

    def interrupted(*a, **k):
        if len(made) == 2:
            raise KeyboardInterrupt
        made.append(a[2:4])
        return real_perturb(*a, **k)

    monkeypatch.setattr(robustness, "perturb_video", interrupted)
    assert main(args) == 130  # stopped at the third copy
    log_path = next(run.glob("robustness-*")) / "verdicts.jsonl"
    first = [json.loads(x) for x in log_path.read_text().splitlines()]
    assert len(first) == 3 and [(x["perturbation"], x["level"]) for x in first] == [("clean", 0), ("gb", 1), ("gb", 5)]
    made.clear()
    monkeypatch.setattr(robustness, "perturb_video", lambda *a, **k: made.append(a[2:4]) or real_perturb(*a, **k))
    assert main(args + ["--keep-videos", str(tmp_path / "kept")]) == 0
    printed = capsys.readouterr().out
    assert "3 copies scored now" not in printed and "5 copies scored now, 3 already done" in printed
    assert made == [("rs", 1), ("gb", 1), ("gb", 5), ("rs", 1)]  # the second video's cells only, and rs of the first
    lines = [json.loads(x) for x in log_path.read_text().splitlines()]
    assert len(lines) == 8 and len({(x["video_id"], x["perturbation"], x["level"]) for x in lines}) == 8
    assert {x["status"] for x in lines if x["perturbation"] == "rs"} == {"not_smaller"}  # 128 px: not enlarged
    blur = [x for x in lines if x["perturbation"] == "gb"]
    assert all(x["params"]["drawn"]["kernel"] in (7, 21) and x["psnr"] is not None for x in blur)
    for vid in {x["video_id"] for x in blur}:
        by = {x["level"]: x["psnr"] for x in blur if x["video_id"] == vid}
        assert by[5] < by[1]
    assert sorted(p.relative_to(tmp_path / "kept").as_posix() for p in (tmp_path / "kept").rglob("*.mp4")) == sorted(
        f"{c}-{lv}/{v}.mp4" for v in {x["video_id"] for x in lines} for c, lv in (("gb", 1), ("gb", 5))
        if v != first[0]["video_id"])

    # the clean row is tim evaluate's, video by video
    table = json.loads((log_path.parent / "robustness.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())  # tim run's tim evaluate on the test split
    clean = {x["video_id"]: x for x in lines if x["perturbation"] == "clean"}
    assert set(clean) == {v["video_id"] for v in metrics["videos"]}
    for v in metrics["videos"]:
        assert clean[v["video_id"]]["score"] == pytest.approx(v["score"], abs=1e-5)
        assert clean[v["video_id"]]["probability"] == pytest.approx(v["probability"], abs=1e-5)
    overall = metrics["overall"]["video"]
    assert table["clean"]["videos"] == overall["count"] == 2
    assert (table["clean"]["auc"], table["clean"]["acc"]) == (pytest.approx(overall["auc"]),
                                                              pytest.approx(overall["acc@thr"]))
    assert table["clean"]["ece"] == pytest.approx(metrics["calibration"]["ece_after"], abs=1e-5)
    assert table["threshold"] == pytest.approx(metrics["threshold"])
    gb1 = next(r for r in table["rows"] if (r["perturbation"], r["level"]) == ("gb", 1))
    flips = np.mean([x["predicted"] != clean[x["video_id"]]["predicted"] for x in blur if x["level"] == 1])
    assert gb1["flipped"] == pytest.approx(flips) and gb1["scored"] == 2
    assert gb1["drop"]["acc"] == pytest.approx(gb1["clean"]["acc"] - gb1["perturbed"]["acc"])
    assert gb1["perturbed"]["auc"] == pytest.approx(roc_auc_score(
        [x["label"] for x in blur if x["level"] == 1], [x["score"] for x in blur if x["level"] == 1]))
    gb5 = next(r for r in table["rows"] if (r["perturbation"], r["level"]) == ("gb", 5))
    # a copy without a verdict is counted as failed, not scored: blur 21 hides 128-px faces from MTCNN
    assert gb5["scored"] + sum(gb5["failed"].values()) == 2
    assert set(gb5["failed"]) <= {"no_face"}
    rs1 = next(r for r in table["rows"] if r["perturbation"] == "rs")
    assert rs1["failed"] == {"not_smaller": 2} and rs1["scored"] == 0
    assert "| Gaussian blur (gb) | 5 | 21 |" in (log_path.parent / "robustness.md").read_text()
    assert (log_path.parent / "robustness.png").stat().st_size > 1000

    # nothing entered the work directory: the manifest and every artifact as they were
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*")} == files
    assert all(Path(r["path"]).parent.parent == tmp_path / "data" for r in read_manifest(work))

    # another detector in the run directory (trained again, resumed): no verdict of the old one is reused
    from safetensors.torch import load_file, save_file

    weights = next(run.glob("best/model.safetensors"))
    state = load_file(weights)
    state = {k: v + 0.01 if v.is_floating_point() and "head" in k else v for k, v in state.items()}
    save_file(state, weights, metadata={"format": "pt"})
    made.clear()
    assert main(["robustness", str(run), "--perturbations", "gb", "--levels", "1", "-q"]) == 0
    assert "0 already done" in capsys.readouterr().out and sorted(made) == [("gb", 1), ("gb", 1)]


def test_tim_run_augment_adds_perturbed_training_copies_only_resumes_and_records_them(tmp_path, capsys):
    """`tim run --augment cs,vc`: each training video gets perturbed copies (a frame type and an
    encoder type) as training rows in its source's group; no val or test video has one; their
    crops are made from the perturbed frames; the detector records what it trained on; a re-run
    makes nothing again; a source that can no longer be decoded is a row of errors.csv, the other
    copies go on."""

    import yaml

    from truthinmotion.apps.cli import main
    from truthinmotion.data.augment import AugmentConfig
    from truthinmotion.data.index import manifest_hash, read_manifest
    from truthinmotion.faces.artifact import Faces
    from truthinmotion.models.detector import read_record
    from truthinmotion.synth.augment import run_augment

    _need_av()
    _tiny_clips_and_settings(tmp_path, ", augment_copies: 2")
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "data"), "-o", str(out), "--config", str(tmp_path / "tim.yaml"), "--name", "r",
            "--augment", "cs,vc", "--augment-levels", "1,2", "-q"]
    assert main(args) == 0
    capsys.readouterr()
    work, run = out / "work", out / "runs" / "r"
    rows = read_manifest(work)
    by_id = {r["video_id"]: r for r in rows}
    copies = [r for r in rows if r.get("augment")]
    train = [r for r in rows if r["split"] == "train" and not r.get("augment")]
    assert len(copies) == 2 * len(train) == 8
    for c in copies:  # in the train split, in the group of a training video, with its label
        src = by_id[c["source"]]
        assert (src["split"], c["split"], c["group"], c["label"], c["path"]) == (
            "train", "train", src["group"], src["label"], src["path"])
    assert not {c["source"] for c in copies} & {r["video_id"] for r in rows if r["split"] in ("val", "test")}
    drawn = {c["augment"] for c in copies}
    assert {d.split("-")[0] for d in drawn} == {"cs", "vc"} and {d.split("-")[1] for d in drawn} <= {"1", "2"}

    def chroma(crops):  # spread of the colour channels about grey: 0 for a grey picture
        x = crops.astype(np.float32)
        return float(np.mean(np.abs(x - x.mean(-1, keepdims=True))))

    for c in copies:
        mine, theirs = (Faces.load(work / "faces" / f"{v}.npz").crops for v in (c["video_id"], c["source"]))
        assert (work / "flow" / "farneback" / f"{c['video_id']}.npz").is_file()
        assert mine.shape == theirs.shape and not np.array_equal(mine, theirs)
        if c["augment"].startswith("cs"):  # chroma scaled by 0.4 or 0.3: the crops lose most of their colour
            assert chroma(mine) < 0.6 * chroma(theirs)
    record = read_record(run / "best")
    assert record.provenance.augment == {"perturbations": ["cs", "vc"], "levels": [1, 2], "copies": 2, "seed": 0,
                                         "videos": 8}
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["augment"], saved["augment_levels"], saved["augment_copies"]) == (["cs", "vc"], [1, 2], 2)
    assert record.provenance.manifest_hash == manifest_hash(work)  # copies do not change the split

    # a re-run makes nothing again
    faces = {p: p.stat().st_mtime_ns for p in (work / "faces").glob("aug-*.npz")}
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "augment: 0 copies added" in printed and "augment: 0 processed, 8 already done" in printed
    assert {p: p.stat().st_mtime_ns for p in (work / "faces").glob("aug-*.npz")} == faces

    # tim train --augment on the same work directory: the copies are there, none made again; it
    # trains on them and says so
    assert main(["train", str(work), "-o", str(out / "runs" / "t"), "--config", str(tmp_path / "tim.yaml"),
                 "--augment", "cs,vc", "--augment-levels", "1,2", "-q"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (work / "faces").glob("aug-*.npz")} == faces
    assert read_record(out / "runs" / "t" / "best").provenance.augment == record.provenance.augment
    capsys.readouterr()

    # a source that cannot be decoded any more: its copies fail, recorded; the others are kept
    broken = train[0]
    Path(broken["path"]).write_bytes(b"not a video")
    cfg = AugmentConfig(augment=("cs", "vc"), augment_levels=(1, 2), augment_copies=2)
    result = run_augment(work, cfg, progress=False)
    mine = {c["video_id"] for c in copies if c["source"] == broken["video_id"]}
    assert set(result.copies.failed) == mine and result.copies.skipped == 6
    errors = {(r["video_id"], r["stage"]) for r in csv.DictReader(open(work / "errors.csv"))}
    assert {(v, "augment") for v in mine} <= errors
