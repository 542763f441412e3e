from __future__ import annotations

import csv
import glob
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import FFPP, need_shared
from truthinmotion.faces import stage as faces_mod
from truthinmotion.data.compact import stored_crops
from truthinmotion.faces.mtcnn import FaceDetector, box_iou, crop_square
from truthinmotion.faces.artifact import Faces
from truthinmotion.faces.config import FacesConfig
from truthinmotion.faces.extract import extract_faces
from truthinmotion.faces.stage import run_faces
from truthinmotion.data.index import IndexConfig, index_dataset
from truthinmotion.media.clips import synth_clip
from truthinmotion.media.video import read_frames, sample_points


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector.from_config(FacesConfig())


def test_box_iou_known_values():
    a = np.array([0, 0, 10, 10.0])
    assert box_iou(a, a) == pytest.approx(1.0)
    assert box_iou(a, np.array([5, 0, 15, 10.0])) == pytest.approx(50 / 150)
    assert box_iou(a, np.array([20, 20, 30, 30.0])) == 0.0
    assert box_iou(a, np.full(4, np.nan)) == 0.0


def test_crop_square_is_centred_scaled_and_padded():
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[90:110, 140:160] = 255  # a 20x20 white square centred at (150, 100)
    crop = crop_square(frame, np.array([140, 90, 160, 110.0]), scale=2.0, size=40)
    # Side 40 around the centre: the white square fills the middle half exactly.
    assert crop.shape == (40, 40, 3)
    assert crop[10:30, 10:30].min() == 255 and crop[:10].max() == 0 and crop[:, 30:].max() == 0
    # A box at the border is zero-padded, not shifted: the face stays centred.
    edge = crop_square(frame, np.array([-10, -10, 10, 10.0]), scale=1.0, size=20)
    assert edge[:10].max() == 0 and edge[:, :10].max() == 0
    corner = np.zeros((200, 300, 3), np.uint8)
    corner[:10, :10] = 200
    assert crop_square(corner, np.array([-10, -10, 10, 10.0]), 1.0, 20)[10:, 10:].min() == 200


def test_generated_clip_faces(clips, detector):
    cfg = FacesConfig(num_points=8, size=64)
    faces = extract_faces(clips["real"], cfg, detector)
    assert faces.crops.shape == (8, 2, 64, 64, 3) and faces.crops.dtype == np.uint8
    assert faces.valid.all() and faces.scores.min() >= cfg.min_score
    assert list(faces.frame_index) == list(sample_points(30, 8))
    assert faces.frame_index[-1] == 28  # the last pair is (28, 29) of 30 frames


def _face_centre_offset(crop: np.ndarray, detector: FaceDetector) -> float:
    """Distance of the face found in ``crop`` from the crop's centre, as a fraction of its side."""
    det = detector([crop])[0]
    assert len(det), "no face found in the crop"
    best = det[np.argmax(det[:, 4])]
    centre = np.array([(best[0] + best[2]) / 2, (best[1] + best[3]) / 2])
    return float(np.linalg.norm(centre - crop.shape[0] / 2) / crop.shape[0])


@pytest.mark.slow
def test_real_ffpp_faces_found_centred_and_pairs_share_box(detector):
    need_shared()
    cfg = FacesConfig(num_points=16)  # the default 32 finds the same faces in twice the time
    for path in sorted(glob.glob(str(FFPP / "**" / "*.mp4"), recursive=True)):
        faces = extract_faces(path, cfg, detector)
        assert faces.crops.shape == (16, 2, 224, 224, 3)
        assert faces.valid.mean() >= 0.9, (path, faces.valid.mean())
        # Centred: MTCNN run on the crop itself finds the face near the crop's centre.
        for i in np.flatnonzero(faces.valid)[::4]:
            assert _face_centre_offset(faces.crops[i, 0], detector) < 0.06, (path, i)
        # Both crops of a pair share the box: re-crop frame t+1 with the stored box.
        i = int(np.flatnonzero(faces.valid)[len(faces.valid) // 2])
        t = int(faces.frame_index[i])
        frames = dict(read_frames(path, [t, t + 1]))
        for j in (0, 1):
            again = crop_square(frames[t + j], faces.boxes[i].astype(float), cfg.box_scale, cfg.size)
            assert np.abs(again.astype(int) - faces.crops[i, j]).max() <= 1
        assert not np.array_equal(faces.crops[i, 0], faces.crops[i, 1])  # t and t+1 differ


def _workdir_with_bad_videos(tmp_path: Path, clips: dict[str, Path], faceless: Path) -> Path:
    root = tmp_path / "data"
    (root / "real").mkdir(parents=True)
    (root / "fake").mkdir()
    shutil.copy(clips["real"], root / "real" / "good.mp4")
    shutil.copy(clips["fake"], root / "fake" / "good.mp4")
    shutil.copy(faceless, root / "real" / "noface.mp4")
    (root / "fake" / "text.mp4").write_text("this is not a video\n" * 50)
    data = clips["real"].read_bytes()  # mp4v writes its index last: a cut file cannot be opened
    (root / "fake" / "truncated.mp4").write_bytes(data[: len(data) // 3])
    # An AVI keeps its header: cut in half, it opens, claims 30 frames and decodes 15.
    writer = cv2.VideoWriter(str(tmp_path / "full.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (128, 128))
    for frame in synth_clip(False, frames=30, size=128):
        writer.write(frame)
    writer.release()
    data = (tmp_path / "full.avi").read_bytes()
    (root / "fake" / "cut.avi").write_bytes(data[: len(data) // 2])
    index_dataset(root, tmp_path / "w", IndexConfig(format="folder"))
    return tmp_path / "w"


def test_bad_videos_are_recorded_and_the_batch_goes_on(tmp_path, clips, faceless):
    work = _workdir_with_bad_videos(tmp_path, clips, faceless)
    report = run_faces(work, FacesConfig(num_points=6, size=64), progress=False)
    assert report.processed == 2 and not report.ok
    assert sorted(Path(p).stem for p in glob.glob(str(work / "faces" / "*.npz"))) == ["fake-good", "real-good"]
    with open(work / "errors.csv") as f:
        rows = {r["video_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"fake-text", "fake-truncated", "fake-cut", "real-noface"}
    assert rows["fake-cut"]["status"] == "truncated" and "stream ended" in rows["fake-cut"]["reason"]
    assert rows["real-noface"]["status"] == "no_face"
    assert rows["fake-text"]["status"] == "unreadable"
    assert rows["fake-truncated"]["status"] == "unreadable"
    assert all(r["stage"] == "faces" and r["reason"] for r in rows.values())
    # No temporary file is left behind.
    assert not list((work / "faces").glob(".*"))


def test_interrupted_run_resumes_without_redoing(tmp_path, clips, faceless, monkeypatch):
    work = _workdir_with_bad_videos(tmp_path, clips, faceless)
    cfg = FacesConfig(num_points=4, size=32)
    real_extract = faces_mod.extract_faces
    calls: list[str] = []

    def interrupted(path, *args, **kwargs):
        calls.append(Path(path).name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_extract(path, *args, **kwargs)

    monkeypatch.setattr(faces_mod, "extract_faces", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_faces(work, cfg, only=["fake-good", "real-good"], progress=False)
    done = list((work / "faces").glob("*.npz"))
    assert len(done) == 1 and not list((work / "faces").glob(".*"))
    first = done[0].stat().st_mtime_ns
    monkeypatch.setattr(faces_mod, "extract_faces", real_extract)
    report = run_faces(work, cfg, only=["fake-good", "real-good"], progress=False)
    assert (report.skipped, report.processed) == (1, 1)
    assert done[0].stat().st_mtime_ns == first  # the finished video was not redone
    assert Faces.load(done[0]).crops.shape == (4, 2, 32, 32, 3)


def test_parallel_workers_give_the_same_crops(tmp_path, clips, faceless):
    work = _workdir_with_bad_videos(tmp_path, clips, faceless)
    cfg = FacesConfig(num_points=4, size=32, crop_format="raw")  # the crops as computed, to compare exactly
    report = run_faces(work, cfg, workers=2, progress=False)
    assert report.processed == 2 and len(report.failed) == 4
    serial = extract_faces(clips["fake"], cfg, FaceDetector.from_config(cfg))
    parallel = Faces.load(work / "faces" / "fake-good.npz")
    # Worker processes use another thread count: MTCNN's sums may differ in the last bits.
    np.testing.assert_allclose(parallel.boxes, serial.boxes, atol=1e-3)
    assert np.abs(parallel.crops.astype(int) - serial.crops).max() <= 1


def _side_by_side(tmp_path: Path, frames: int = 40, height: int = 360) -> tuple[Path, list[Path], int]:
    """Two real FF++ videos next to each other, each scaled to ``height``: (video, sources, left width)."""
    from truthinmotion.media.clips import write_video

    sources = [FFPP / "original_sequences/youtube/c23/videos/004.mp4",
               FFPP / "original_sequences/youtube/c23/videos/634.mp4"]
    halves = []
    for src in sources:
        cols = [cv2.resize(f, (round(f.shape[1] * height / f.shape[0]) // 2 * 2, height), interpolation=cv2.INTER_AREA)
                for _, f in read_frames(src, range(frames))]
        halves.append(np.stack(cols))
    video = write_video(tmp_path / "two.mp4", np.concatenate(halves, axis=2))
    for i, (src, half) in enumerate(zip(sources, halves)):
        write_video(tmp_path / f"half{i}.mp4", half)
    return video, [tmp_path / "half0.mp4", tmp_path / "half1.mp4"], halves[0].shape[2]


def test_two_people_give_two_tracks_each_on_its_face(tmp_path, detector, run_dir):
    need_shared()
    from truthinmotion.inference.scorer import Scorer

    video, halves, left_w = _side_by_side(tmp_path)
    cfg = FacesConfig(num_points=8)
    faces = extract_faces(video, cfg, detector)
    assert len(faces.tracks) == 2 and faces.meta["tracks"] == 2
    # each track follows one person: the same boxes as that person's video alone (shifted)
    centres = []
    for track in faces.tracks:
        assert track.valid.mean() >= 0.75
        centres.append(np.nanmedian((track.boxes[:, 0] + track.boxes[:, 2]) / 2))
    sides = [int(c > left_w) for c in centres]
    assert sorted(sides) == [0, 1]
    for track, side in zip(faces.tracks, sides):
        alone = extract_faces(halves[side], cfg, detector)
        shifted = track.boxes - np.array([left_w * side, 0, left_w * side, 0], np.float32)
        both = track.valid & alone.valid
        assert np.median(box_iou(shifted[both].astype(float), alone.boxes[both].astype(float))) > 0.8
    # saved and loaded with its track axis; max_faces 1 keeps the main face alone
    faces.save(tmp_path / "two.npz")
    again = Faces.load(tmp_path / "two.npz")
    assert len(again.tracks) == 2
    np.testing.assert_array_equal(again.tracks[1].crops, stored_crops(faces.tracks[1].crops, "jpeg", 95))
    assert len(extract_faces(video, cfg.updated({"max_faces": 1}), detector).tracks) == 1

    # detect scores both faces; the video is as fake as its most fake face
    verdict = Scorer(run_dir)(video)
    assert verdict.ok and [t["track"] for t in verdict.tracks] == [0, 1]
    assert verdict.probability == max(t["probability"] for t in verdict.tracks)
    for t in verdict.tracks:
        assert t["time_points"] >= 0.75 * verdict.faces["time_points"]  # its own 32 points
        assert abs((t["box"][0] + t["box"][2]) / 2 - centres[t["track"]]) < 20


def test_faces_artifacts_of_schema_1_are_read_as_one_track(tmp_path):
    """Artifacts written before the track axis (the main face alone) still load."""
    from truthinmotion.core.io import save_npz

    k, s = 3, 16
    crops = np.random.default_rng(0).integers(0, 255, (k, 2, s, s, 3), dtype=np.uint8)
    boxes = np.tile(np.array([[0, 0, 8, 8]], np.float32), (k, 1))
    save_npz(tmp_path / "old.npz", {"stage": "faces"}, frame_index=np.arange(k), boxes=boxes,
             scores=np.ones(k, np.float32), detected=np.ones(k, bool), crops=crops)
    old = Faces.load(tmp_path / "old.npz")
    assert len(old.tracks) == 1 and np.array_equal(old.crops, crops) and old.boxes.shape == (k, 4)
    save_npz(tmp_path / "future.npz", {"stage": "faces", "schema": 9}, frame_index=np.arange(k), boxes=boxes[None])
    from truthinmotion.core.errors import StageError

    with pytest.raises(StageError, match="schema 9"):
        Faces.load(tmp_path / "future.npz")
