from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from truthinmotion.models.detector import read_record
from truthinmotion.models.record import DetectorRecord
import torch

from synthetic import make_workdir
from truthinmotion.training import train as train_mod
from truthinmotion.core.errors import ConfigError
from truthinmotion.models.inputs import DataConfig, encode_inputs
from truthinmotion.training.dataset import VideoDataset, collate, flip_flow
from truthinmotion.models.architecture import BACKBONES, DetectorConfig, Preprocess
from truthinmotion.models.detector import Detector
from truthinmotion.training.train import TrainConfig, train

# The synthetic disc (tests/synthetic.py) is learnt within a few epochs with per-picture flow
# scaling; the default fixed scale of real face motion leaves its 1-2 px jitter dim at 56 px.
TINY = dict(backbone="dinov2-tiny", init="random", image_size=56, workers=0, progress=False,
            flow_encoding="hsv-per-picture", flow_relative=False)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return make_workdir(tmp_path_factory.mktemp("syn") / "w")


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _expected_trainable(h: int, blocks: int, n_layers: int, head_in: int, hidden: int) -> int:
    """Parameter counts of DINOv2 written out from its architecture (not read from the model)."""
    block = (
        2 * h  # norm1
        + 3 * (h * h + h) + (h * h + h)  # q, k, v and output projections
        + h  # layer scale 1
        + 2 * h  # norm2
        + (h * 4 * h + 4 * h) + (4 * h * h + h)  # MLP
        + h  # layer scale 2
    )
    embeddings = h + (37 * 37 + 1) * h + (3 * 14 * 14 * h + h)  # cls, positions, patches (the mask token is unused)
    head = head_in * hidden + hidden + hidden + 1
    if blocks == -1:
        return embeddings + n_layers * block + 2 * h + head
    return blocks * block + (2 * h if blocks > 0 else 0) + head


@pytest.mark.parametrize("blocks", [0, 1, 2, -1])
@pytest.mark.parametrize("modality,shared", [("flow", False), ("flow+depth", False), ("flow+depth", True)])
def test_trainable_parameters_follow_the_freeze_policy(blocks, modality, shared):
    cfg = DetectorConfig(backbone="dinov2-tiny", modality=modality, train_blocks=blocks, shared_encoder=shared)
    model = Detector.build(cfg, init="random")
    spec = BACKBONES["dinov2-tiny"]
    h, m = spec.hidden_size, len(cfg.modalities)
    encoders = 1 if shared else m
    head = _expected_trainable(h, 0, spec.num_hidden_layers, h * m, cfg.head_hidden)
    per_encoder = _expected_trainable(h, blocks, spec.num_hidden_layers, h * m, cfg.head_hidden) - head
    assert model.num_trainable() == encoders * per_encoder + head


def test_training_learns_the_signal_and_only_the_signal(work, tmp_path):
    cfg = TrainConfig(**TINY, epochs=4, batch_size=6, lr=1e-3, train_points=4)
    result = train(work, cfg, tmp_path / "run")
    assert result.best_video_auc >= 0.9
    rows = _metrics(tmp_path / "run")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    for name in ("config.yaml", "env.json", "train.log", "best/model.safetensors", "last/trainer_state.pt"):
        assert (tmp_path / "run" / name).is_file(), name
    # Shuffled labels: nothing to learn, validation AUC stays near chance.
    shuffled = make_workdir(tmp_path / "shuffled", shuffle_labels=True, seed=1)
    aucs = [float(r["val_video_auc"]) for r in _metrics(train(shuffled, cfg.updated({"patience": 4}), tmp_path / "s").run_dir)]
    assert max(abs(a - 0.5) for a in aucs) < 0.3, aucs


def test_checkpoint_round_trip_gives_identical_outputs(work, tmp_path):
    cfg = DetectorConfig(backbone="dinov2-tiny", modality="flow+rgb", fusion="score", train_blocks=1)
    record = DetectorRecord(cfg, {}, preprocess=Preprocess(56, (0.5,) * 3, (0.2,) * 3))
    model = Detector.build(cfg, init="random", record=record)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.add_(torch.randn_like(p))
    model.save_pretrained(tmp_path / "det")
    loaded = Detector.from_pretrained(tmp_path / "det")
    assert loaded.cfg == cfg and loaded.preprocess == Preprocess(56, (0.5,) * 3, (0.2,) * 3)
    x = {"flow": torch.randn(3, 3, 56, 56), "rgb": torch.randn(3, 3, 56, 56)}
    model.eval()
    with torch.no_grad():
        a, b = model(x), loaded(x)
    torch.testing.assert_close(a.logit, b.logit, rtol=0, atol=0)
    torch.testing.assert_close(a.parts, b.parts, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="no detector"):
        Detector.from_pretrained(tmp_path / "nothing")


def test_resume_continues_from_the_saved_epoch(work, tmp_path, monkeypatch):
    cfg = TrainConfig(**TINY, epochs=3, batch_size=6, lr=1e-3, train_points=4, patience=5)
    full = train(work, cfg, tmp_path / "full")
    real_eval = train_mod.validate
    calls = []

    def crash_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(train_mod, "validate", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(work, cfg, tmp_path / "cut")
    assert len(_metrics(tmp_path / "cut")) == 2
    monkeypatch.setattr(train_mod, "validate", real_eval)
    with pytest.raises(ConfigError, match="already holds a trained detector.*--resume"):
        train(work, cfg, tmp_path / "cut")
    import shutil

    shutil.copytree(tmp_path / "cut" / "best", tmp_path / "copied" / "best")  # a detector alone: not resumable
    with pytest.raises(ConfigError, match="cannot be resumed"):
        train(work, cfg, tmp_path / "copied")
    resumed = train(work, cfg, tmp_path / "cut", resume=True)
    rows = _metrics(tmp_path / "cut")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and resumed.epochs_run == 3
    # Same seed, same per-epoch order and draws: the resumed run ends where the uninterrupted one did.
    a = Detector.from_pretrained(tmp_path / "full" / "last").state_dict()
    b = Detector.from_pretrained(tmp_path / "cut" / "last").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert full.best_epoch == resumed.best_epoch


def test_a_resume_goes_on_with_the_fakes_it_began_on(work, tmp_path):
    """--fakes auto is worked out from the manifest: twins made after a run began would change its
    fakes halfway; the resume says so, and goes on when given the fakes it began on."""
    import shutil

    from truthinmotion.data.index import read_manifest, write_manifest

    copy = tmp_path / "w"
    shutil.copytree(work, copy)
    cfg = TrainConfig(**TINY, epochs=1, batch_size=6, lr=1e-3, train_points=4, patience=5)
    train(copy, cfg, tmp_path / "run")
    assert read_record(tmp_path / "run" / "last").provenance.fakes == "dataset"
    rows = read_manifest(copy)
    real = next(r for r in rows if r["label"] == 0 and r["split"] == "train")
    twin = {**real, "video_id": f"pseudo-blend-0-{real['video_id']}", "label": 1, "method": "pseudo-blend",
            "source": real["video_id"]}
    write_manifest(copy, rows + [twin])
    longer = cfg.updated({"epochs": 2})
    with pytest.raises(ConfigError, match="started on dataset fakes and would go on with both.*--fakes dataset"):
        train(copy, longer, tmp_path / "run", resume=True)
    resumed = train(copy, longer.updated({"fakes": "dataset"}), tmp_path / "run", resume=True)
    assert resumed.epochs_run == 2 and read_record(tmp_path / "run" / "last").provenance.fakes == "dataset"


def test_augment_is_refused_where_every_copy_would_be_real(work, tmp_path):
    """Copies are made of dataset videos only: with pseudo-fakes alone, asked for or found by
    --fakes auto, every perturbed training video would be real."""
    import shutil

    from truthinmotion.data.index import read_manifest, write_manifest

    with pytest.raises(ConfigError, match="--augment with --fakes pseudo.*shortcut"):
        TrainConfig().updated({"augment": ["cs"], "fakes": "pseudo"})
    copy = tmp_path / "w"
    shutil.copytree(work, copy)
    reals = [r for r in read_manifest(copy) if r["label"] == 0]
    twins = [{**r, "video_id": f"pseudo-blend-0-{r['video_id']}", "label": 1, "method": "pseudo-blend",
              "source": r["video_id"]} for r in reals]
    write_manifest(copy, reals + twins)
    with pytest.raises(ConfigError, match="real videos and pseudo-fakes.*shortcut"):
        train(copy, TrainConfig(**TINY, augment=("cs",)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_flip_negates_flow_x_and_mirrors_every_modality(work):
    flow = np.zeros((1, 4, 4, 2), np.float32)
    flow[0, :, 0] = (2.0, 1.0)  # left column moves right and down
    flipped = flip_flow(flow)
    assert (flipped[0, :, -1] == (-2.0, 1.0)).all() and (flipped[0, :, :-1] == 0).all()
    np.testing.assert_array_equal(flip_flow(flipped), flow)
    cfg = DataConfig(flip=1.0, train_points=3)
    pre = Preprocess(size=56)
    ds = VideoDataset(work, "train", "flow+rgb", cfg, pre, train=True)
    item = ds[0]
    raw = ds.load_arrays(0)
    points = item["points"].numpy()
    expect = encode_inputs({"flow": flip_flow(raw["flow"][points].astype(np.float32)),
                            "rgb": raw["rgb"][points][:, :, ::-1]}, ("flow", "rgb"), pre, cfg)
    for m in ("flow", "rgb"):
        torch.testing.assert_close(item["inputs"][m], expect[m])
    unflipped = VideoDataset(work, "train", "flow", cfg.updated({"flip": 0.0}), pre, train=True)[0]
    assert not torch.allclose(unflipped["inputs"]["flow"], item["inputs"]["flow"])


def test_splits_are_respected(work):
    with open(work / "manifest.csv") as f:
        split = {r["video_id"]: r["split"] for r in csv.DictReader(f)}
    for name in ("train", "val", "test"):
        ds = VideoDataset(work, name, "flow", DataConfig(), Preprocess(size=56))
        assert ds.videos and {split[v.video_id] for v in ds.videos} == {name}
    batch = collate([VideoDataset(work, "test", "flow", DataConfig(), Preprocess(size=56))[i] for i in range(2)])
    assert batch["inputs"]["flow"].shape == (12, 3, 56, 56) and batch["video"].tolist() == [0] * 6 + [1] * 6


def test_config_errors(work, tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig().updated({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="modality"):
        TrainConfig().updated({"modality": "flow+sound"})
    # A boolean is no number, although Python's bool is an int (YAML's `epochs: true`).
    for key, value, expected in (("epochs", True, "integer"), ("train_blocks", True, "integer"),
                                 ("lr", False, "number"), ("epochs", 2.5, "integer"), ("flow", 3, "string")):
        with pytest.raises(ConfigError, match=rf"{key}: expected {expected}, got {value!r}"):
            TrainConfig().updated({key: value})
    assert TrainConfig().updated({"lr": 1}).lr == 1  # an integer is a number


def test_missing_artifacts_name_the_ones_that_exist(work, tmp_path):
    with pytest.raises(ConfigError, match=r"no depth artifacts in .*run `tim features"):
        train(work, TrainConfig(**TINY, modality="depth"), tmp_path / "r")
    with pytest.raises(ConfigError, match=r"no flow artifacts named 'dis' .*there are: farneback \(use --flow farneback\)"):
        train(work, TrainConfig(**TINY, flow="dis"), tmp_path / "r")
    assert not (tmp_path / "r" / "config.yaml").exists()


def _relabelled(work: Path, root: Path, change) -> Path:
    """A work directory sharing ``work``'s artifacts, with manifest rows changed by ``change``."""
    root.mkdir()
    for name in ("faces", "flow"):
        (root / name).symlink_to(work / name)
    with open(work / "manifest.csv") as f:
        rows = [change(r) for r in csv.DictReader(f)]
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_one_class_splits_are_refused(work, tmp_path):
    only_real_val = _relabelled(work, tmp_path / "w1", lambda r: {**r, "split": "test"}
                                if r["split"] == "val" and r["label"] == "1" else r)
    with pytest.raises(ConfigError, match="the val split has 8 real and 0 fake videos"):
        train(only_real_val, TrainConfig(**TINY), tmp_path / "r1")
    no_val = _relabelled(work, tmp_path / "w2", lambda r: {**r, "split": "train"} if r["split"] == "val" else r)
    with pytest.raises(ConfigError, match="has no val videos"):
        train(no_val, TrainConfig(**TINY), tmp_path / "r2")
    assert not (tmp_path / "r1" / "config.yaml").exists() and not (tmp_path / "r2" / "best").exists()


def test_fp16_training_scales_the_loss_and_bf16_does_not(work, tmp_path, monkeypatch):
    seen: list[bool] = []
    real_scale = torch.amp.GradScaler.scale

    def spy(self, outputs):
        seen.append(self.is_enabled())
        return real_scale(self, outputs)

    monkeypatch.setattr(torch.amp.GradScaler, "scale", spy)
    cfg = TrainConfig(**TINY, epochs=1, batch_size=12, train_points=2)
    train(work, cfg.updated({"autocast": "fp16"}), tmp_path / "fp16")
    assert seen and all(seen)
    seen.clear()
    train(work, cfg.updated({"autocast": "bf16"}), tmp_path / "bf16")
    assert seen and not any(seen)


def test_resume_refuses_other_settings_and_records_allowed_changes(work, tmp_path):
    cfg = TrainConfig(**TINY, epochs=1, batch_size=12, train_points=2, lr=1e-3)
    train(work, cfg, tmp_path / "run")
    before = (tmp_path / "run" / "config.yaml").read_bytes()
    weights = (tmp_path / "run" / "last" / "model.safetensors").read_bytes()
    for change in ({"lr": 2e-3}, {"modality": "flow+rgb"}, {"backbone": "dinov2-tiny-wide"}):
        with pytest.raises(ConfigError, match=f"{next(iter(change))}: .* -> "):
            train(work, cfg.updated({**change, "epochs": 2}), tmp_path / "run", resume=True)
        assert (tmp_path / "run" / "config.yaml").read_bytes() == before  # nothing changed on refusal
        assert (tmp_path / "run" / "last" / "model.safetensors").read_bytes() == weights
    result = train(work, cfg.updated({"epochs": 2}), tmp_path / "run", resume=True)
    assert result.epochs_run == 2
    from truthinmotion.core.config import load_yaml

    assert load_yaml(tmp_path / "run" / "config.yaml")["epochs"] == 2  # what was actually used


@pytest.mark.slow
@pytest.mark.parametrize("blocks,port", [("1", 29533), ("all", 29534)])
def test_ddp_with_two_processes_on_cpu(work, tmp_path, blocks, port):
    """The same command under torchrun (gloo, 2 processes) trains and writes one run directory;
    with every block trained too (DDP refuses a parameter that needs a gradient and gets none,
    from the second step on: 12 train videos per rank in batches of 4 are 3 steps an epoch)."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "truthinmotion", "train", str(work), "-o", str(run), "--backbone", "dinov2-tiny",
           "--init", "random", "--image-size", "56", "--workers", "0", "--epochs", "2", "--batch-size", "4",
           "--train-points", "4", "--lr", "1e-3", "--train-blocks", blocks, "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = _metrics(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # rank 0 alone writes
    detector = Detector.from_pretrained(run)
    assert detector.cfg.backbone == "dinov2-tiny" and detector.cfg.train_blocks == (-1 if blocks == "all" else 1)


def test_a_checkpoint_is_replaced_as_a_unit(work, tmp_path, monkeypatch):
    """A failure between a checkpoint's weights and its config leaves the old best/ and last/ whole
    (their weights with their own config and state) and no temporary folder; a kill between moving
    the old folder aside and the new one in is settled on the next run."""
    import truthinmotion.models.detector as models_mod
    from truthinmotion.training.runs import restore_checkpoints

    run = tmp_path / "run"
    cfg = TrainConfig(**TINY, epochs=2, batch_size=6, lr=1e-3, train_points=4, patience=5)
    real_validate, real_write = train_mod.validate, models_mod.atomic_write_text
    snapshot: dict[str, bytes] = {}
    configs = []

    def validate(*args, **kwargs):  # at epoch 2's validation, before its checkpoints: epoch 1's files
        if snapshot == {} and (run / "last").is_dir():
            snapshot.update({str(p.relative_to(run)): p.read_bytes() for p in run.glob("*/*") if p.is_file()})
        return real_validate(*args, **kwargs)

    def write(path, text):  # epoch 1 writes best/ and last/; the third config is epoch 2's
        configs.append(path)
        if len(configs) == 3:
            raise OSError("disk full")
        return real_write(path, text)

    monkeypatch.setattr(train_mod, "validate", validate)
    monkeypatch.setattr(models_mod, "atomic_write_text", write)
    with pytest.raises(OSError, match="disk full"):
        train(work, cfg, run)
    monkeypatch.undo()
    assert {"best/model.safetensors", "best/config.json", "last/model.safetensors", "last/trainer_state.pt"} <= set(snapshot)
    now = {str(p.relative_to(run)): p.read_bytes() for p in run.glob("*/*") if p.is_file()}
    assert now == snapshot  # epoch 2 changed nothing of epoch 1's checkpoints
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []
    best = Detector.from_pretrained(run)
    assert best.record.provenance.trained["epoch"] == 1
    state = torch.load(run / "last" / "trainer_state.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 0
    # A kill after best/ was moved aside, with the new folder half-written: the next run restores it.
    (run / "best").rename(run / ".best.old-dead")
    (run / ".best.new-dead").mkdir()
    (run / ".best.new-dead" / "model.safetensors").write_bytes(b"half")
    resumed = train(work, cfg, run, resume=True)
    assert resumed.epochs_run == 2 and sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []
    assert Detector.from_pretrained(run).record.provenance.trained["epoch"] in (1, 2)
    restore_checkpoints(run)  # nothing left to settle
    assert (run / "best" / "config.json").is_file()


def test_resume_refuses_another_split_unless_asked(work, tmp_path, caplog):
    """Re-indexing can move videos between splits; a run resumed on the new split would validate
    (and later be tested) on videos it trained on. The split's hash is in the detector and refused."""
    from truthinmotion.data.index import manifest_hash
    from truthinmotion.models.detector import read_record

    moved = {"real000", "real012"}  # one train and one val video trade places
    mine = _relabelled(work, tmp_path / "w", lambda r: r)
    cfg = TrainConfig(**TINY, epochs=1, batch_size=12, train_points=2)
    train(mine, cfg, tmp_path / "run")
    before = manifest_hash(mine)
    assert read_record(tmp_path / "run" / "best").provenance.manifest_hash == before
    assert read_record(tmp_path / "run" / "last").provenance.manifest_hash == before
    swap = {"train": "val", "val": "train"}
    other = _relabelled(work, tmp_path / "w2", lambda r: {**r, "split": swap[r["split"]]} if r["video_id"] in moved else r)
    (mine / "manifest.csv").write_bytes((other / "manifest.csv").read_bytes())
    after = manifest_hash(mine)
    assert after != before
    weights = (tmp_path / "run" / "last" / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match=rf"manifest hash {before}, now {after}.*--allow-split-change"):
        train(mine, cfg.updated({"epochs": 2}), tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "last" / "model.safetensors").read_bytes() == weights
    caplog.set_level("WARNING", logger="truthinmotion.training.runs")
    result = train(mine, cfg.updated({"epochs": 2}), tmp_path / "run", resume=True, allow_split_change=True)
    assert result.epochs_run == 2 and "going on (--allow-split-change)" in caplog.text
    assert read_record(tmp_path / "run" / "last").provenance.manifest_hash == after
