from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from conftest import FFPP, need_shared
from synthetic import make_workdir
from truthinmotion.apps.cli import main
from truthinmotion.models.loading import OnnxDetector, load_detector
from truthinmotion.experiments.compress import compress
from truthinmotion.core.errors import ConfigError
from truthinmotion.models.inputs import DataConfig, encode_inputs
from truthinmotion.experiments.evaluate import evaluate
from truthinmotion.faces.mtcnn import FaceDetector
from truthinmotion.faces.config import FacesConfig
from truthinmotion.faces.extract import extract_faces
from truthinmotion.features.flow import FlowConfig, FlowEstimator
from truthinmotion.models.detector import Detector
from truthinmotion.training.distill import distill
from truthinmotion.training.distiller import distill_loss
from truthinmotion.training.train import TrainConfig, train

# per-picture flow scaling: the synthetic disc's signal (see tests/test_train.py's TINY)
TINY = dict(init="random", image_size=56, workers=0, progress=False, batch_size=6, lr=1e-3, train_points=4,
            flow_encoding="hsv-per-picture", flow_relative=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress")
    work = make_workdir(root / "w")
    train(work, TrainConfig(backbone="dinov2-tiny", epochs=3, **TINY), root / "fp32")
    return root


@pytest.fixture(scope="module")
def variants(base):
    return {m: compress(base / "fp32", m, base / m) for m in ("onnx", "int8", "bf16")}


# Tolerances: ONNX Runtime fp32 computes the same graph with other kernels, so probabilities
# agree to float32 rounding (1e-4 is generous); int8 weights change the numbers themselves: a few
# hundredths at most, and AUC within 0.05 of the fp32 detector on the synthetic test videos.
def test_onnx_and_int8_agree_with_fp32(base, variants):
    assert variants["onnx"].max_prob_diff < 1e-4
    assert variants["int8"].max_prob_diff < 0.05
    assert variants["int8"].size_bytes < 0.6 * variants["onnx"].size_bytes
    assert isinstance(load_detector(base / "int8"), OnnxDetector)
    auc = {m: evaluate(base / m, "test", progress=False).metrics["overall"]["video"]["auc"] for m in ("fp32", "int8", "onnx")}
    assert abs(auc["int8"] - auc["fp32"]) <= 0.05 and abs(auc["onnx"] - auc["fp32"]) <= 1e-6
    cfg = json.loads((base / "int8" / "best" / "config.json").read_text())
    assert cfg["inference"]["runtime"] == "onnx" and cfg["inference"]["checked_on"] > 0
    # every variant keeps the original's thresholds and calibration
    original = json.loads((base / "fp32" / "best" / "config.json").read_text())["verdict"]
    for m in ("onnx", "int8", "bf16"):
        assert json.loads((base / m / "best" / "config.json").read_text())["verdict"] == original, m


def test_bf16_halves_the_weights_and_stays_close(base, variants):
    assert variants["bf16"].max_prob_diff < 0.05
    fp32 = (base / "fp32" / "best" / "model.safetensors").stat().st_size
    assert (base / "bf16" / "best" / "model.safetensors").stat().st_size < 0.7 * fp32
    model = load_detector(base / "bf16")
    assert model.record.inference.autocast == "bf16" and model.record.inference.method == "bf16"
    # Half precision in memory too, not cast back to fp32 at load: the encoders' matrices are
    # bf16, their LayerNorms and the head fp32.
    enc = next(iter(model.encoders.values()))
    assert enc.encoder.layer[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert enc.layernorm.weight.dtype == torch.float32
    assert next(model.heads.parameters()).dtype == torch.float32
    with pytest.raises(ConfigError, match="fp16 runs under CUDA autocast"):
        compress(base / "fp32", "fp16", base / "fp16")  # checking it needs a GPU here
    assert not (base / "fp16").exists()  # refused before anything was created


def test_int8_on_real_face_flow(base, variants):
    need_shared()
    cfg = FacesConfig(num_points=6)
    faces = extract_faces(FFPP / "original_sequences/youtube/c23/videos/634.mp4", cfg, FaceDetector.from_config(cfg))
    flow = FlowEstimator(FlowConfig())(faces.crops)
    fp32 = Detector.from_pretrained(base / "fp32")
    x = encode_inputs({"flow": flow}, ("flow",), fp32.preprocess, DataConfig())
    with torch.no_grad():
        ref = torch.sigmoid(fp32(x).logit).numpy()
    for name, tol in (("onnx", 1e-4), ("int8", 0.05)):
        got = torch.sigmoid(load_detector(base / name)(x).logit).numpy()
        assert np.abs(got - ref).max() < tol, name


def test_distillation_kl_decreases_and_student_reloads(base, tmp_path):
    work = base / "w"
    teacher_dir = tmp_path / "teacher"
    train(work, TrainConfig(backbone="dinov2-tiny-wide", epochs=2, **TINY), teacher_dir)
    result = distill(teacher_dir, tmp_path / "student", "dinov2-tiny", overrides={"epochs": 4, "patience": 4})
    with open(tmp_path / "student" / "metrics.csv") as f:
        kl = [float(r["train_kl"]) for r in csv.DictReader(f)]
    assert len(kl) == 4 and kl[-1] < kl[0]
    student = Detector.from_pretrained(tmp_path / "student")
    assert student.cfg.backbone == "dinov2-tiny" and student.embed_dim == 64
    assert student.record.provenance.distilled_from["backbone"] == "dinov2-tiny-wide"
    state = torch.load(tmp_path / "student" / "last" / "trainer_state.pt", weights_only=False)
    assert state["projection"]["proj"].shape == (64, 128)  # teacher width 128 -> student width 64
    assert result.best_epoch >= 1


def _agreement(student_run, teacher: Detector, work) -> float:
    """Share of held-out (test) pictures on which the student and the teacher give the same class."""
    from torch.utils.data import DataLoader

    from truthinmotion.training.dataset import VideoDataset, collate
    from truthinmotion.training.train import predict

    student = Detector.from_pretrained(student_run)
    data = student.record.data  # the teacher's encodings too
    loader = DataLoader(VideoDataset(work, "test", "flow", data, student.preprocess), batch_size=4, collate_fn=collate)
    s, t = predict(student, loader, "cpu"), predict(teacher, loader, "cpu")
    return float(np.mean((s["prob"] >= 0.5) == (t["prob"] >= 0.5)))


def test_distilled_student_agrees_with_the_teacher_more_often(base, tmp_path):
    """Transfer, not just a falling loss: the student's training labels are shuffled, so only the
    teacher (trained on clean labels) can tell it which pictures are fake. With distillation the
    student agrees with the teacher on held-out pictures far more often than without."""
    teacher_dir = tmp_path / "teacher"
    train(base / "w", TrainConfig(backbone="dinov2-tiny-wide", epochs=4, **TINY), teacher_dir)
    teacher = Detector.from_pretrained(teacher_dir)
    noisy = make_workdir(tmp_path / "noisy", n_per_class=16, splits=(8, 4, 4), seed=5, shuffle_labels=("train",))
    agreement = {}
    for name, with_teacher in (("plain", None), ("distilled", teacher)):
        runs = []
        for seed in (0, 1):
            run = tmp_path / f"{name}{seed}"
            cfg = TrainConfig(backbone="dinov2-tiny", epochs=6, patience=6, seed=seed, **TINY)
            train(noisy, cfg, run, teacher=with_teacher)
            runs.append(_agreement(run, teacher, noisy))
        agreement[name] = float(np.mean(runs))
    assert agreement["distilled"] >= 0.75, agreement
    assert agreement["distilled"] >= agreement["plain"] + 0.2, agreement


def test_distillation_projection_is_fixed_and_cannot_be_met_half_way(base, tmp_path):
    """The embedding term's target is the teacher's own principal components, fixed before
    training: a student that collapses to a constant embedding keeps a positive KL, and the
    projection the student trained against is the one fitted to the teacher (not co-trained)."""
    from torch.utils.data import DataLoader

    from truthinmotion.training.dataset import VideoDataset, collate
    from truthinmotion.training.distiller import DistillConfig, Distiller

    work = base / "w"
    train(work, TrainConfig(backbone="dinov2-tiny-wide", epochs=1, **TINY), tmp_path / "teacher")
    teacher = Detector.from_pretrained(tmp_path / "teacher")
    ds = VideoDataset(work, "train", "flow", teacher.record.data, teacher.preprocess)
    distiller = Distiller(teacher, DistillConfig(), "cpu")
    distiller.fit(DataLoader(ds, batch_size=6, collate_fn=collate), width=64)
    assert distiller.proj.shape == (64, 128) and not distiller.proj.requires_grad
    batch = collate([ds[i] for i in range(6)])
    target = distiller.project(teacher(batch["inputs"]).embedding.detach())
    assert distill_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    collapsed = torch.zeros_like(target)  # what a co-trained projection could meet
    assert distill_loss(collapsed, target).item() > 0.05
    # The student trains against exactly this projection, and it does not move during training.
    distill(tmp_path / "teacher", tmp_path / "student", "dinov2-tiny", overrides={"epochs": 2})
    saved = torch.load(tmp_path / "student" / "last" / "trainer_state.pt", weights_only=False)["projection"]
    torch.testing.assert_close(saved["proj"], distiller.proj, rtol=1e-4, atol=1e-5)


def test_distill_loss_is_zero_only_when_distributions_match():
    e = torch.randn(3, 4)
    assert distill_loss(e, e).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(e, -e).item() > 0.1


def test_benchmark_rows_and_speedups(base, variants, tmp_path, capsys):
    runs = [str(base / m) for m in ("fp32", "onnx", "int8", "bf16")]
    assert main(["benchmark", *runs, "--repeats", "3", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "benchmark.json").read_text())
    rows = data["rows"]
    assert [r["variant"] for r in rows] == ["fp32", "onnx", "int8", "bf16"]
    assert [r["method"] for r in rows] == ["fp32", "onnx", "int8", "bf16"]
    base_row = rows[0]
    assert base_row["speedup_latency"] == 1.0 and base_row["speedup_throughput"] == 1.0
    for r in rows:
        assert r["speedup_latency"] == round(base_row["latency_p50_ms"] / r["latency_p50_ms"], 2)
        assert r["speedup_throughput"] == round(r["throughput"] / base_row["throughput"], 2)
        assert r["latency_p95_ms"] >= r["latency_p50_ms"] > 0 and r["size_mb"] > 0
        assert 0.0 <= r["video_auc"] <= 1.0
    md = (tmp_path / "benchmark.md").read_text()
    assert md.count("\n| ") == 6 and "speed-ups against `fp32`" in md


def test_onnx_fallback_folder_is_removed_at_exit(tmp_path):
    """An unwritable cache sends exports to a temporary folder of this process: it serves the
    process's later calls and is gone when the process exits, but not when a forked child does."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = """
import os, sys
from pathlib import Path
from truthinmotion.backends.onnxrun import export_cached

calls = []
def export(path):
    calls.append(path)
    Path(path).write_bytes(b"onnx")

a = export_cached("m", "k", export)
assert export_cached("m", "k", export) == a and len(calls) == 1 and a.read_bytes() == b"onnx"
if os.fork() == 0:
    sys.exit(0)  # a normal exit of a forked child runs the parent's exit handlers too
os.wait()
print(a, a.is_file())
"""
    (tmp_path / "blocked").write_text("a file, not a folder")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TIM_CACHE_DIR": str(tmp_path / "blocked"), "TMPDIR": str(tmp)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    path, exists = done.stdout.split()
    assert exists == "True" and Path(path).parent.parent == tmp and "cannot write the ONNX cache" in done.stderr
    assert list(tmp.iterdir()) == []


def test_exports_hold_the_position_grid_as_a_constant(tmp_path):
    """DINOv2 resamples its 37 x 37 position grid to the picture's patches on every call; an
    export holds the resampled grid as a constant (no Resize for ONNX Runtime to redo on every
    call) and still gives PyTorch's probabilities, at any batch size."""
    import onnx

    from truthinmotion.experiments.compress import write_variant
    from truthinmotion.models.architecture import DetectorConfig

    torch.manual_seed(0)
    from truthinmotion.models.architecture import Preprocess
    from truthinmotion.models.record import DetectorRecord

    cfg = DetectorConfig(backbone="dinov2-tiny", modality="flow")
    model = Detector.build(cfg, init="random", record=DetectorRecord(cfg, {}, preprocess=Preprocess(size=56))).eval()
    x = {"flow": torch.randn(20, 3, 56, 56)}  # 20: more than one call of CPU_ROWS pictures
    with torch.no_grad():
        ref = torch.sigmoid(model(x).logit)
    for method, tol in (("onnx", 1e-5), ("int8", 0.05)):
        write_variant(model, method, tmp_path / method, {"flow": x["flow"][:2]})
        (file,) = (tmp_path / method).glob("*.onnx")
        ops = {n.op_type for n in onnx.load(str(file)).graph.node}
        assert "Resize" not in ops and ops & {"MatMul", "MatMulInteger"}, method
        variant = load_detector(tmp_path / method)
        for n in (1, 20):
            got = torch.sigmoid(variant({"flow": x["flow"][:n]}).logit)
            torch.testing.assert_close(got, ref[:n], atol=tol, rtol=0)
    # the PyTorch model itself is left as it was: it still resamples for other sizes
    assert "interpolate_pos_encoding" not in vars(model.encoders["flow"].embeddings)
