"""Pseudo-fakes (truthinmotion.synth): twins stay with their source through every split, each kind
changes the face and nothing beyond its feathered mask, a blend moves with the face while a
frame-wise blend does not, and a re-run makes nothing twice."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from truthinmotion.core.io import WorkDir, load_npz
from truthinmotion.data.index import IndexConfig, index_dataset, manifest_hash, read_manifest
from truthinmotion.data.pseudo import is_pseudo
from truthinmotion.faces.config import FacesConfig
from truthinmotion.media.clips import FACE_BOX, synth_clip, write_video
from truthinmotion.synth.config import ALL_KINDS, KINDS, SynthConfig
from truthinmotion.synth.kinds import make_twin
from truthinmotion.synth.stage import run_synth

FACES = FacesConfig(num_points=4, size=64)
SIZE = 192  # generated clips' side; the portrait's face box scales with it


def _frames(seed: int = 0, n: int = 20) -> dict[int, np.ndarray]:
    """A real-style generated clip (smooth motion of the whole picture), BGR by frame index."""
    return {i: f[..., ::-1].copy() for i, f in enumerate(synth_clip(False, frames=n, size=SIZE, seed=seed))}


def _box() -> np.ndarray:
    return np.array(FACE_BOX, np.float64) * SIZE / 512


@pytest.fixture(scope="module")
def work(tmp_path_factory, faceless) -> Path:
    """A folder of three real generated clips and a faceless video, indexed, with one twin of each kind
    per real video."""
    root = tmp_path_factory.mktemp("synth")
    for i in range(3):
        write_video(root / "data" / "real" / f"r{i}.mp4", synth_clip(False, frames=16, size=160, seed=i))
    shutil.copy(faceless, root / "data" / "real" / "noface.mp4")
    index_dataset(root / "data", root / "work", IndexConfig(format="folder", ratios=(0.5, 0.25, 0.25)))
    return root / "work"


@pytest.fixture(scope="module")
def made(work: Path):
    before = manifest_hash(work)
    result = run_synth(work, SynthConfig(per_video=len(KINDS)), FACES, progress=False)
    return result, before


def test_twins_are_rows_of_their_sources_group_and_split_and_stay_there_on_reindex(work, made):
    result, before = made
    rows = read_manifest(work)
    reals = {r["video_id"]: r for r in rows if not is_pseudo(r)}
    twins = [r for r in rows if is_pseudo(r)]
    assert len(twins) == len(KINDS) * len(reals) == result.manifest_rows
    assert {r["method"] for r in twins} == {f"pseudo-{k}" for k in KINDS}
    for t in twins:
        src = reals[t["source"]]
        assert (t["label"], t["group"], t["split"], t["path"]) == (1, src["group"], src["split"], src["path"])
    assert len({reals[t["source"]]["split"] for t in twins}) == 3  # the sources span every split
    assert manifest_hash(work) == before  # twins follow the real videos' split: it is not another one
    # A re-index with another seed moves the real videos; their twins move with them, none dropped.
    index_dataset(work.parent / "data", work, IndexConfig(format="folder", ratios=(0.5, 0.25, 0.25), seed=3))
    moved = read_manifest(work)
    reals2 = {r["video_id"]: r for r in moved if not is_pseudo(r)}
    assert any(reals2[v]["split"] != reals[v]["split"] for v in reals)
    assert sorted(r["video_id"] for r in moved if is_pseudo(r)) == sorted(t["video_id"] for t in twins)
    for t in (r for r in moved if is_pseudo(r)):
        assert (t["group"], t["split"]) == (reals2[t["source"]]["group"], reals2[t["source"]]["split"])


def test_a_twin_is_cropped_from_its_altered_frames_and_a_faceless_source_is_recorded(work, made):
    result, _ = made
    w = WorkDir(work)
    rows = read_manifest(work)
    noface = [r["video_id"] for r in rows if is_pseudo(r) and r["source"] == "real-noface"]
    assert sorted(result.failed) == sorted(noface)  # the batch went on past them
    errors = {(r["video_id"], r["stage"]): r["status"] for r in w.errors.rows()}
    assert errors[("real-noface", "faces")] == "no_face"
    assert all(errors[(v, "synth")] == "no_source_faces" for v in noface)
    for t in (r for r in rows if is_pseudo(r) and r["source"] != "real-noface"):
        twin, meta = load_npz(w.faces(t["video_id"]))
        src, _ = load_npz(w.faces(t["source"]))
        assert meta["synth"]["spec"]["kind"] == t["method"].removeprefix("pseudo-")
        assert np.array_equal(twin["frame_index"], src["frame_index"])  # the same sampled frames
        # found by the faces stage's own detector, where the source's face is
        assert np.nanmax(np.abs(twin["boxes"][0] - src["boxes"][0])) < 6
        assert not np.array_equal(twin["crops_data"], src["crops_data"])


def test_a_rerun_skips_finished_twins_and_remakes_a_missing_one_identically(work, made):
    result, _ = made
    w = WorkDir(work)
    done = sorted(result.twins.stats)
    stamps = {v: w.faces(v).stat().st_mtime_ns for v in done}
    again = run_synth(work, SynthConfig(per_video=len(KINDS)), progress=False)  # faces settings: the folder's
    assert (again.twins.processed, again.twins.skipped, again.manifest_rows) == (0, len(done), 0)
    assert {v: w.faces(v).stat().st_mtime_ns for v in done} == stamps
    # the failed twins are tried again (and fail again), the finished ones are not
    assert sorted(again.failed) == sorted(result.failed)
    victim = next(v for v in done if "frame-wise" in v)
    old = load_npz(w.faces(victim))[0]
    w.faces(victim).unlink()
    third = run_synth(work, SynthConfig(per_video=len(KINDS)), progress=False)
    assert sorted(third.twins.stats) == [victim]
    new = load_npz(w.faces(victim))[0]
    assert all(np.array_equal(old[k], new[k], equal_nan=True) for k in old)  # seeded per twin: the same twin
    # another recipe is another twin: made again
    fourth = run_synth(work, SynthConfig(per_video=len(KINDS), colour=0.1), only=["real-r0"], progress=False)
    assert sorted(fourth.twins.stats) == sorted(v for v in done if v.endswith("-real-r0"))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_kind_changes_the_face_and_nothing_outside_its_feathered_mask(kind):
    frames = _frames()
    points = np.array([0, 6, 12, 17])
    boxes = np.tile(_box(), (len(points), 1))
    twin, masks, record = make_twin(kind, frames, points, boxes, SynthConfig(), np.random.default_rng(1), masks=True)
    pairs = sorted({int(t) + j for t in points for j in (0, 1)})
    assert sorted(masks) == pairs
    box = _box().round().astype(int)
    for f in frames:
        diff = np.abs(twin[f].astype(int) - frames[f].astype(int)).max(-1)
        if f not in masks:  # frames outside the pairs (timing's neighbours) are read, never changed
            assert not diff.any()
            continue
        m = masks[f]
        assert not diff[m == 0].any(), f"{kind}: pixels changed outside the mask of frame {f}"
        assert m[(box[1] + box[3]) // 2, (box[0] + box[2]) // 2] > 0.99  # the face centre is inside
        assert (m > 0).sum() < 4 * (box[2] - box[0]) * (box[3] - box[1])  # the face region, not the frame
        assert diff[m > 0.9].mean() > 2.0, f"{kind}: frame {f} barely changed inside its face"
    assert record  # the drawn parameters are recorded


def _face_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from truthinmotion.features.flow import FlowConfig, FlowEstimator

    x1, y1, x2, y2 = _box().round().astype(int)
    crop = lambda f: np.ascontiguousarray(f[y1:y2, x1:x2, ::-1])  # noqa: E731
    return FlowEstimator(FlowConfig())(np.stack([[crop(a), crop(b)]]))[0]


def test_blend_moves_with_the_face_and_framewise_does_not():
    """On each pair, the twin's flow inside the face against its source's: a blend made once moves
    with the face (the same small error as the source's own flow), one drawn per frame does not."""
    errors = {"blend": [], "frame-wise": []}
    for seed in range(3):
        frames = _frames(seed)
        points = np.array([0, 5, 10, 15])
        boxes = np.tile(_box(), (len(points), 1))
        for kind in errors:
            twin, masks, _ = make_twin(kind, frames, points, boxes, SynthConfig(), np.random.default_rng(seed),
                                       masks=True)
            for t in points:
                real = _face_flow(frames[t], frames[t + 1])
                fake = _face_flow(twin[t], twin[t + 1])
                x1, y1, x2, y2 = _box().round().astype(int)
                inside = masks[t][y1:y2, x1:x2] > 0.5
                errors[kind].append(float(np.linalg.norm(fake - real, axis=-1)[inside].mean()))
    blend, framewise = np.mean(errors["blend"]), np.mean(errors["frame-wise"])
    assert blend < 0.1, errors["blend"]
    assert framewise > 4 * blend and framewise > 0.5, errors


def test_fakes_choose_the_training_rows_and_auto_follows_the_manifest(work, made):
    from truthinmotion.core.errors import ConfigError
    from truthinmotion.data.pseudo import resolve_fakes, select_fakes

    rows = read_manifest(work)
    assert resolve_fakes(rows, "auto") == "pseudo"  # real videos and twins only
    with pytest.raises(ConfigError, match="no fakes of the dataset"):
        resolve_fakes(rows, "dataset")
    swap = {**rows[0], "video_id": "swap-1", "label": 1, "method": "Deepfakes", "source": ""}
    both = [*rows, swap]
    assert resolve_fakes(both, "auto") == "both"
    methods = {f: {r["method"] for r in select_fakes(both, f) if r["label"] == 1} for f in ("dataset", "pseudo", "both")}
    assert methods["dataset"] == {"Deepfakes"}
    assert methods["pseudo"] == {f"pseudo-{k}" for k in KINDS}
    assert methods["both"] == methods["dataset"] | methods["pseudo"]
    for f in ("dataset", "pseudo"):  # every real video stays
        assert sum(r["label"] == 0 for r in select_fakes(both, f)) == sum(r["label"] == 0 for r in rows)
    with pytest.raises(ConfigError, match="tim synth"):
        resolve_fakes([r for r in rows if not is_pseudo(r)], "pseudo")


@pytest.mark.slow
def test_tim_run_with_pseudo_fakes_on_a_folder_of_real_videos_alone(tmp_path, capsys, caplog):
    """`tim run DATA --fakes pseudo`: a folder of real clips alone (no real/ or fake/ in it); twins are
    made, trained on, evaluated, and the run, its detector's provenance and its report say which
    fakes it learnt from."""
    import json

    from truthinmotion.apps.cli import main
    from truthinmotion.models.detector import read_record

    for i in range(4):
        write_video(tmp_path / "data" / f"r{i}.mp4", synth_clip(False, frames=12, size=128, seed=10 + i))
    (tmp_path / "tim.yaml").write_text(
        "index: {ratios: [0.5, 0.25, 0.25]}\nfaces: {num_points: 4, size: 56}\n"
        "train: {backbone: dinov2-tiny, init: random, image_size: 56, modality: flow, epochs: 2, batch_size: 4,"
        " train_points: 4, workers: 0, lr: 0.001}\n")
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "data"), "-o", str(out), "--config", str(tmp_path / "tim.yaml"),
                 "--fakes", "pseudo", "--per-video", "2", "--kinds", "blend,frame-wise", "--name", "p", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "indexed 4 videos" in printed and "methods: real (4)" in printed
    assert any("has no real/ or fake/ folder, so its 4 videos are indexed as REAL" in r.getMessage()
               for r in caplog.records)
    assert "synth: 8 twins added to the manifest" in printed and "synth: 8 processed" in printed
    assert "features: 12 processed" in printed
    record = read_record(out / "runs" / "p" / "best")
    assert record.provenance.fakes == "pseudo"
    assert record.provenance.fake_methods == ("pseudo-blend", "pseudo-frame-wise")
    metrics = json.loads((out / "runs" / "p" / "metrics.json").read_text())
    assert metrics["fakes"] == "pseudo"
    test_reals = {r["video_id"] for r in read_manifest(out / "work") if r["split"] == "test" and not is_pseudo(r)}
    scored = {v["video_id"]: v for v in metrics["videos"]}
    assert {v for v, r in scored.items() if r["label"] == 0} == test_reals
    assert {v["method"] for v in scored.values() if v["label"] == 1} == {"pseudo-blend", "pseudo-frame-wise"}
    assert all(any(v.endswith(f"-{r}") for r in test_reals) for v, s in scored.items() if s["label"] == 1)
    assert "**pseudo-fakes** made from real videos (tim synth): pseudo-blend, pseudo-frame-wise" in (
        out / "runs" / "p" / "report.md").read_text()


def test_twins_are_made_again_when_their_sources_are_cropped_anew(tmp_path):
    """`tim faces --overwrite` with other settings re-crops the real videos: their twins, cropped
    with the old settings, are not current any more and are made again, with the new ones."""
    from truthinmotion.faces.artifact import Faces
    from truthinmotion.faces.stage import run_faces

    write_video(tmp_path / "data" / "real" / "r0.mp4", synth_clip(False, frames=12, size=160, seed=0))
    index_dataset(tmp_path / "data", tmp_path / "work", IndexConfig(format="folder", ratios=(0.5, 0.25, 0.25)))
    work, cfg = tmp_path / "work", SynthConfig(kinds=("blend",), per_video=1)
    first = run_synth(work, cfg, FACES, progress=False)
    (twin,) = first.twins.stats
    assert Faces.load(WorkDir(work).faces(twin)).crops.shape[-2] == 64
    again = run_synth(work, cfg, FACES, progress=False)
    assert (again.twins.processed, again.twins.skipped) == (0, 1)  # current: not made again
    bigger = FACES.updated({"size": 96})
    run_faces(work, bigger, overwrite=True, progress=False)
    remade = run_synth(work, cfg, bigger, progress=False)
    assert sorted(remade.twins.stats) == [twin]
    assert Faces.load(WorkDir(work).faces(twin)).crops.shape[-2] == 96
