from __future__ import annotations

import json
import shutil

import pytest

from conftest import DFDC, FFPP, need_shared
from truthinmotion.cli import main
from truthinmotion.config import ConfigError
from truthinmotion.detect import Scorer


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
    from truthinmotion.models import Detector, DetectorConfig

    model = Detector.build(DetectorConfig(backbone="dinov2-tiny", modality="depth"), init="random",
                           extra={"features": {"depth": {"model": "depth-anything-v2-tiny", "init": "random",
                                                         "input_size": 56}}})
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="randomly initialised"):
        Scorer(tmp_path / "m")
