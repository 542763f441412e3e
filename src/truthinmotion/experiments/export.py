"""``tim export RUN OUT``: a trained detector as a folder to publish on the Hugging Face hub.

The folder holds the weights (``model.safetensors``), the record (``config.json``, the same
:class:`~..models.record.DetectorRecord` a run's ``best/`` holds, so it loads like a run:
:func:`..models.loading.load_detector`), the run's ``metrics.json``, and a model card
(``README.md`` with the hub's YAML header) written from the run alone: what it was trained on,
its test figures with 95% bootstrap intervals over test videos (:func:`.study.cell_statistics`),
its calibration, the robustness table and the speed of its variants when the run has them, its
intended use and limits, and how to run it. Model cards follow Mitchell et al., "Model Cards for
Model Reporting" (FAT* 2019). ``variants`` puts compressed copies (:func:`.compress.compress`)
beside it, under ``variants/<method>/``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..core.config import Settings, require
from ..core.errors import ConfigError
from ..core.io import atomic_write_text, without_paths
from ..models.detector import detector_dir, read_record
from .study import cell_statistics

__all__ = ["CARD_FIGURES", "ExportConfig", "ExportResult", "card_figures", "export_detector", "model_card"]

log = logging.getLogger(__name__)

# Card figure -> (where it is in metrics.json, what the card calls it).
CARD_FIGURES = {
    "video_auc": (("overall", "video", "auc"), "video ROC AUC"),
    "frame_auc": (("overall", "frame", "auc"), "frame ROC AUC"),
    "accuracy": (("overall", "video", "acc@thr"), "video accuracy at the threshold"),
    "ece": (("calibration", "ece_after"), "expected calibration error (calibrated)"),
}


@dataclass
class ExportResult:
    out_dir: Path
    figures: dict[str, Any]
    variants: list[str]

    def summary(self) -> str:
        f = self.figures
        auc = f["video_auc"]
        return (f"exported to {self.out_dir} (model card: README.md); test video AUC {auc['value']:.4f} "
                f"[{auc['ci95'][0]:.4f}, {auc['ci95'][1]:.4f}] on {f['videos']} videos"
                + (f"; variants: {', '.join(self.variants)}" if self.variants else ""))


def _get(data: dict[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        data = data[k]
    return data


def card_figures(run_dir: Path, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The test figures of ``run_dir``'s ``metrics.json`` with their bootstrap intervals."""
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file() or not (run_dir / "predictions.csv").is_file():
        raise ConfigError(f"{run_dir} has no metrics.json and predictions.csv: evaluate it first "
                          f"(tim evaluate {run_dir}), the card reports its test figures")
    stats = cell_statistics(run_dir, bootstrap, seed)
    metrics = json.loads(metrics_file.read_text())
    for name, (keys, _) in CARD_FIGURES.items():  # the card's values are metrics.json's, not recomputed
        stats[name]["value"] = _get(metrics, keys)
    return {**stats, "split": metrics["split"], "aggregation": metrics["aggregation"],
            "threshold": metrics["threshold"], "calibration": metrics["calibration"],
            "per_method": {m: b["video"]["auc"] for m, b in metrics["per_method"].items()},
            "bootstrap": bootstrap}


def _training_data(record: Any) -> dict[str, Any]:
    """What the detector learnt from: dataset formats (from its work directory's manifest, when it
    is still there), fake methods, real or pseudo fakes, number of training videos."""
    prov = record.provenance
    formats: list[str] = []
    manifest = Path(prov.workdir or "") / "manifest.csv"
    if prov.workdir and manifest.is_file():
        with open(manifest, newline="") as f:
            formats = sorted({r.get("dataset", "") for r in csv.DictReader(f)} - {""})
    else:
        log.warning("the work directory %s is gone: the card cannot name the training datasets", prov.workdir)
    return {"datasets": formats, "fakes": prov.fakes, "fake_methods": list(prov.fake_methods or ()),
            "train_videos": (prov.trained or {}).get("train_videos"), "epoch": (prov.trained or {}).get("epoch"),
            "backbone_init": (prov.backbone_weights or {}).get("init")}


def _robustness(run_dir: Path) -> dict[str, Any] | None:
    tables = sorted(run_dir.glob("robustness-*/robustness.json"))
    return json.loads(tables[0].read_text()) if tables else None


def _speed(run_dir: Path) -> dict[str, Any] | None:
    file = run_dir / "benchmark.json"
    return json.loads(file.read_text()) if file.is_file() else None


def _f(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


def model_card(record: Any, figures: dict[str, Any], name: str, *, training: dict[str, Any],
               robustness: dict[str, Any] | None = None, speed: dict[str, Any] | None = None,
               variants: Sequence[str] = ()) -> str:
    """The ``README.md`` of an exported detector: the hub's YAML header and the card."""
    det = record.detector
    results = [{"task": {"type": "video-classification", "name": "deepfake detection"},
                "dataset": {"type": "truthinmotion-workdir", "name": ", ".join(training["datasets"]) or "unknown",
                            "split": figures["split"]},
                "metrics": [{"type": key, "name": CARD_FIGURES[key][1], "value": figures[key]["value"],
                             "ci95": list(figures[key]["ci95"])} for key in CARD_FIGURES]}]
    header = {"library_name": "truthinmotion", "pipeline_tag": "video-classification",
              "tags": ["deepfake-detection", "optical-flow", "depth", "dinov2", f"modality-{det.modality}"],
              "model-index": [{"name": name, "results": results}]}
    cal = figures["calibration"]
    lines = ["---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "",
             f"# {name}", "",
             f"A truthinmotion deepfake detector: DINOv2 `{det.backbone}` on `{det.modality}` pictures of the "
             f"face ({det.fusion} fusion). It gives the probability that a face in a video was manipulated.", "",
             "## Training data", "",
             f"- datasets: {', '.join(training['datasets']) or 'unknown (the work directory is gone)'}",
             f"- fakes: {training['fakes'] or 'dataset (recorded before --fakes)'}; methods: "
             f"{', '.join(training['fake_methods']) or 'unknown'}",
             f"- training videos: {_f(training['train_videos'])}; kept epoch: {_f(training['epoch'])}",
             f"- backbone weights: {training['backbone_init'] or 'unknown'}", "",
             f"## Test results (`{figures['split']}` split, {figures['videos']} videos: {figures['real']} real, "
             f"{figures['fake']} fake)", "",
             f"95% intervals from {figures['bootstrap']} bootstrap resamples of the test videos; aggregation "
             f"`{figures['aggregation']}`, threshold {_f(figures['threshold'])}.", "",
             "| figure | value | 95% interval |", "| --- | ---: | --- |"]
    for key, (_, label) in CARD_FIGURES.items():
        lo, hi = figures[key]["ci95"]
        lines.append(f"| {label} | {_f(figures[key]['value'])} | [{_f(lo)}, {_f(hi)}] |")
    if figures["per_method"]:
        lines += ["", "Video AUC per fake method (its fakes against all real videos):", "",
                  "| method | video AUC |", "| --- | ---: |"]
        lines += [f"| {m} | {_f(v)} |" for m, v in figures["per_method"].items()]
    lines += ["", "## Calibration", "",
              f"Expected calibration error (15 bins) {_f(cal['ece_before'])} before calibration, "
              f"{_f(cal['ece_after'])} after; Brier score {_f(cal['brier_before'])} before, "
              f"{_f(cal['brier_after'])} after."]
    if robustness:
        lines += ["", "## Robustness", "",
                  f"Test videos perturbed (DeeperForensics-1.0's types and levels); clean video AUC "
                  f"{_f(robustness['clean'].get('auc'))}.", "",
                  "| perturbation | level | video AUC | accuracy | flipped |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['name']} | {r['level']} | {_f(r['perturbed'].get('auc'))} | {_f(r['perturbed'].get('acc'))} | "
                  f"{_f(r['flipped'])} |" for r in robustness["rows"]]
    if speed:
        lines += ["", "## Speed", "", f"Measured by `tim benchmark` on {speed['device']}.", "",
                  "| variant | method | p50 ms (batch 1) | pictures/s | video AUC |", "| --- | --- | ---: | ---: | ---: |"]
        lines += [f"| {r['variant']} | {r['method']} | {r['latency_p50_ms']} | {r['throughput']} | {_f(r['video_auc'])} |"
                  for r in speed["rows"]]
    lines += ["", "## Intended use and limits", "",
              "Screening videos of faces for manipulation, as one signal among others for a person who decides. "
              "Not for decisions about people on its own. The figures hold for videos like its test split; "
              "other datasets, generators, compression and low light can lower them (see the robustness table "
              "where there is one). A video without a detectable face gets no verdict.", "",
              "## How to run it", "", "```bash", "pip install truthinmotion",
              f"tim detect --model ORG/{name} video.mp4      # a hub id (org/name[@revision])",
              "tim detect --model path/to/this/folder video.mp4", "```"]
    if variants:
        lines += ["", "Compressed copies: " + ", ".join(f"`variants/{v}`" for v in variants)
                  + " (load the folder like the main one)."]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ExportConfig(Settings):
    """What ``tim export`` writes: the section ``export`` of a settings file."""

    variants: tuple[str, ...] = ()  # compressed copies put beside it (methods of tim compress)
    bootstrap: int = 1000  # resamples of the test videos for the card's 95% intervals

    def check(self) -> None:
        from .compress import COMPRESS_METHODS

        bad = sorted(set(self.variants) - (set(COMPRESS_METHODS) - {"distill"}))
        require(not bad, f"variants: {bad} not known; choose from {', '.join(m for m in COMPRESS_METHODS if m != 'distill')}")
        require(self.bootstrap >= 1, f"bootstrap: expected 1 or more, got {self.bootstrap}")


def _write_public_record(record: Any, folder: Path) -> None:
    """``record`` as ``folder/config.json`` without the work directory (an exported detector is
    evaluated on a work directory given to it) and with every other path cut to its last part."""
    bare = record.replace(provenance=dataclasses.replace(record.provenance, workdir=None))
    atomic_write_text(folder / "config.json", json.dumps(without_paths(bare.to_json()), indent=2, default=str))


def export_detector(run_dir: str | Path, out_dir: str | Path, *, variants: Sequence[str] = ExportConfig.variants,
                    device: str = "cpu", bootstrap: int = ExportConfig.bootstrap, seed: int = 0) -> ExportResult:
    """Write ``run_dir``'s best detector, its record, metrics and model card into ``out_dir``."""
    from .compress import compress

    run_dir, out = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a run directory")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty: choose another folder")
    source = detector_dir(run_dir)
    record = read_record(source)
    if record.inference.method != "fp32":
        raise ConfigError(f"{run_dir} holds a {record.inference.method} variant: export the fp32 run "
                          "(--variants adds compressed copies)")
    figures = card_figures(run_dir, bootstrap, seed)  # before anything is written: no metrics, no export
    card = model_card(record, figures, out.name, training=_training_data(record), robustness=_robustness(run_dir),
                      speed=_speed(run_dir), variants=variants)
    # Built in a folder beside OUT and renamed into place last: a failure (a variant that does not
    # check) leaves no half-written OUT. Nothing of this machine is published: the record and the
    # metrics name no path of it (the work directory, the run, local weights folders: their last
    # part only; the card names the training data).
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}-", dir=out.parent) as tmp:
        build = Path(tmp) / "export"
        build.mkdir()
        shutil.copy2(source / "model.safetensors", build / "model.safetensors")
        _write_public_record(record, build)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        metrics.update(run=None, workdir=None)
        atomic_write_text(build / "metrics.json", json.dumps(without_paths(metrics), indent=2))
        for method in variants:
            compress(run_dir, method, Path(tmp) / method, device=device)
            made = detector_dir(Path(tmp) / method)
            (build / "variants" / method).mkdir(parents=True)
            for f in made.iterdir():
                if f.name != "config.json":
                    shutil.move(str(f), build / "variants" / method / f.name)
            _write_public_record(read_record(made), build / "variants" / method)
        atomic_write_text(build / "README.md", card)
        if out.exists():
            out.rmdir()  # empty, checked above
        build.rename(out)
    log.info("exported %s to %s", run_dir, out)
    return ExportResult(out, figures, list(variants))
