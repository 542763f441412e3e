"""The record a saved detector carries (``config.json``): everything needed to score a video the
way the detector was trained, with no flags and no work directory.

:class:`DetectorRecord` is typed in full: the detector's architecture, the backbone's
transformers config, the preprocessing, the faces settings, the flow and depth settings that
made its training features (weights included), the data encodings, the verdict rule, the
inference variant and where it all came from. One writer (:meth:`DetectorRecord.to_json`) and
one reader (:meth:`DetectorRecord.from_json`): a key the reader does not know is an error that
names it. Records of the first schema (``truthinmotion-detector/1``, an untyped ``extra`` dict)
still load; what they lost is restored where it can be (the precision of int8 depth from its
artifact folder name, a RAFT weights file from the recorded weights path).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..core.config import Settings, require
from ..core.errors import ConfigError
from ..faces.config import FacesConfig
from ..features.depth import DepthConfig
from ..features.flow import FlowConfig
from .architecture import DetectorConfig, Preprocess
from .calibration import VerdictRule, check_verdict_record, verdict_rule
from .inputs import DataConfig

__all__ = ["RECORD_FORMAT", "DetectorRecord", "InferenceRecord", "Provenance", "features_from_artifacts"]

RECORD_FORMAT = "truthinmotion-detector/2"
_FIRST_FORMAT = "truthinmotion-detector/1"
INFERENCE_METHODS = ("fp32", "fp16", "bf16", "compile", "onnx", "int8")


@dataclass(frozen=True)
class InferenceRecord(Settings):
    """How a saved variant runs (``tim compress`` writes all but ``fp32``)."""

    method: str = "fp32"  # fp32 | fp16 | bf16 | compile | onnx | int8
    runtime: str = "torch"  # torch | onnx: what the saved weights run in
    autocast: str = "auto"  # auto (bf16 on CUDA, off on CPU) | off | fp16 | bf16
    compile: bool = False  # torch.compile when loaded
    file: str | None = None  # the ONNX model in the detector's folder (runtime onnx)
    parameters: int | None = None  # of the PyTorch detector it was made from
    source: str | None = None  # the run directory it was made from
    source_weights: str | None = None  # a hash of the weights it was made from (backends.onnxrun.fingerprint)
    max_prob_diff: float | None = None  # largest probability difference from the source
    checked_on: int | None = None  # real pictures that difference was measured on
    check_split: str | None = None  # the split they came from

    def check(self) -> None:
        require(self.method in INFERENCE_METHODS, f"inference method: one of {', '.join(INFERENCE_METHODS)}")
        require(self.runtime in ("torch", "onnx"), "inference runtime: torch or onnx")
        require(self.autocast in ("auto", "off", "fp16", "bf16"), "inference autocast: auto, off, fp16 or bf16")
        require(self.runtime != "onnx" or bool(self.file), "inference file: an ONNX variant names its model file")

    @property
    def precision(self) -> str:
        """fp32, int8, fp16 or bf16: the arithmetic the variant runs in."""
        return self.method if self.method in ("int8", "fp16", "bf16") else "fp32"


@dataclass(frozen=True)
class Provenance(Settings):
    """Where a detector came from: shown in reports and verdicts, never needed to run it. The
    mappings are provenance as their makers wrote it (weights records, validation metrics, the
    distillation's settings), kept as they are."""

    workdir: str | None = None  # the work directory it was trained on (absolute)
    backbone_weights: dict[str, Any] | None = None  # what the backbone started from (name, init)
    flow_weights: str | None = None  # what computed the training flow: opencv, a RAFT file or URL
    depth_weights: dict[str, Any] | None = None  # the depth model's weights record
    trained: dict[str, Any] | None = None  # the kept epoch, its validation metrics, training videos
    distilled_from: dict[str, Any] | None = None  # the teacher and the distillation settings
    manifest_hash: str | None = None  # the split the detector was trained and validated on
    fakes: str | None = None  # the fakes it was trained on: dataset, pseudo or both (None: recorded before --fakes)
    fake_methods: tuple[str, ...] | None = None  # the methods of its training fakes (pseudo-<kind> for twins)
    # --augment: the perturbation types, levels, copies per video and seed of its training copies
    # and how many it trained on (None: trained without)
    augment: dict[str, Any] | None = None
    run: str | None = None  # the run directory it was loaded from (set on loading, not saved)

    def work_directory(self, given: str | Path | None = None) -> tuple[Path, bool]:
        """The work directory to read (``given``, else the one trained on) and whether it is the
        one trained on. An exported detector records none (:mod:`..experiments.export`): then
        ``given`` is needed, and its absence is an error that says so."""
        own = Path(self.workdir) if self.workdir else None
        work = Path(given) if given else own
        if work is None:
            raise ConfigError("the detector records no work directory (an exported detector): pass --workdir")
        if not work.is_dir():
            raise ConfigError(f"work directory {work} not found: pass --workdir")
        return work, own is not None and own.resolve() == work.resolve()


def _preprocess(data: Mapping[str, Any]) -> Preprocess:
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(Preprocess)})
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} for Preprocess; allowed: size, mean, std")
    return Preprocess(int(data.get("size", 224)), tuple(data.get("mean", Preprocess.mean)),
                      tuple(data.get("std", Preprocess.std)))


def _known(cls: type, data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keys of ``data`` that ``cls`` has: first-schema records kept a few more."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in (data or {}).items() if k in names}


@dataclass(frozen=True)
class DetectorRecord:
    """What a saved detector is and how to feed it (see the module's docstring)."""

    detector: DetectorConfig
    backbone_config: dict[str, Any]  # the DINOv2 architecture: transformers' Dinov2Config.to_dict()
    preprocess: Preprocess = Preprocess()
    faces: FacesConfig = FacesConfig()
    data: DataConfig = DataConfig()  # which artifacts and how they are encoded
    flow: FlowConfig | None = None  # how its flow was computed (None: no flow modality)
    depth: DepthConfig | None = None  # how its depth was computed (None: no depth modality)
    verdict: dict[str, Any] = field(default_factory=dict)  # models.calibration's record
    inference: InferenceRecord = InferenceRecord()
    provenance: Provenance = Provenance()

    _SECTIONS = ("detector", "backbone_config", "preprocess", "faces", "data", "flow", "depth", "verdict",
                 "inference", "provenance")

    # ------------------------------------------------------------ writing

    def to_json(self) -> dict[str, Any]:
        """The ``config.json`` mapping (``provenance.run`` is where it was loaded from: not saved)."""
        return {
            "format": RECORD_FORMAT,
            "detector": self.detector.to_dict(),
            "backbone_config": self.backbone_config,
            "preprocess": {"size": self.preprocess.size, "mean": list(self.preprocess.mean),
                           "std": list(self.preprocess.std)},
            "faces": self.faces.to_dict(),
            "data": self.data.to_dict(),
            "flow": self.flow.to_dict() if self.flow else None,
            "depth": self.depth.to_dict() if self.depth else None,
            "verdict": self.verdict,
            "inference": self.inference.to_dict(),
            "provenance": {k: v for k, v in self.provenance.to_dict().items() if k != "run"},
        }

    def replace(self, **changes: Any) -> "DetectorRecord":
        """A copy with whole sections replaced; ``inference`` and ``provenance`` may be given as
        mappings of the fields to change."""
        for name in ("inference", "provenance"):
            if isinstance(changes.get(name), Mapping):
                changes[name] = getattr(self, name).updated(changes[name])
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------ reading

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str | Path = "config.json") -> "DetectorRecord":
        """Read a record; a ConfigError that names the file and the key for anything it does not know."""
        fmt = data.get("format", _FIRST_FORMAT)
        try:
            if fmt == _FIRST_FORMAT:
                return cls._from_first(data)
            if fmt != RECORD_FORMAT:
                raise ConfigError(f"format {fmt!r}: this version reads {RECORD_FORMAT} and {_FIRST_FORMAT}; "
                                  "a newer truthinmotion wrote it")
            unknown = sorted(set(data) - {"format", *cls._SECTIONS})
            if unknown:
                raise ConfigError(f"unknown key(s) {', '.join(unknown)}; a record has {', '.join(cls._SECTIONS)}")
            return cls(
                detector=DetectorConfig.from_dict(data["detector"]),
                backbone_config=dict(data["backbone_config"]),
                preprocess=_preprocess(data.get("preprocess") or {}),
                faces=FacesConfig.from_dict(data.get("faces")),
                data=DataConfig.from_dict(data.get("data")),
                flow=FlowConfig.from_dict(data["flow"]) if data.get("flow") else None,
                depth=DepthConfig.from_dict(data["depth"]) if data.get("depth") else None,
                verdict=check_verdict_record(dict(data.get("verdict") or {})),
                inference=InferenceRecord.from_dict(data.get("inference")),
                provenance=Provenance.from_dict(data.get("provenance")),
            )
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        except KeyError as err:
            raise ConfigError(f"{where}: the record has no {err.args[0]!r}") from None

    @classmethod
    def _from_first(cls, data: Mapping[str, Any]) -> "DetectorRecord":
        """A first-schema record: flat keys, features as the artifacts' metadata recorded them."""
        detector = DetectorConfig.from_dict(data["detector"])
        mods = detector.modalities
        dcfg = DataConfig.from_saved(data.get("data"))
        flow, depth, flow_weights, depth_weights = features_from_artifacts(mods, data.get("features") or {}, dcfg)
        verdict = dict(data.get("verdict") or {})
        if "threshold" in data and not verdict.get("aggregations"):
            verdict["threshold"] = float(data["threshold"])  # a detector from before calibration
        inference = dict(data.get("inference") or {})
        if inference and "method" not in inference:
            inference["method"] = "fp32"
        return cls(
            detector=detector,
            backbone_config=dict(data["backbone_config"]),
            preprocess=_preprocess(data.get("preprocess") or {}),
            # Crops are scored as the faces artifacts stored them; before compact artifacts, raw.
            faces=FacesConfig.from_dict(_known(FacesConfig, {"crop_format": "raw", **(data.get("faces") or {})})),
            data=dcfg,
            flow=flow,
            depth=depth,
            verdict=verdict,
            inference=InferenceRecord.from_dict(_known(InferenceRecord, inference)),
            provenance=Provenance.from_dict({
                "workdir": data.get("workdir"), "backbone_weights": data.get("backbone_weights"),
                "flow_weights": flow_weights, "depth_weights": depth_weights, "trained": data.get("trained"),
                "distilled_from": data.get("distilled_from"), "manifest_hash": data.get("manifest_hash"),
                "run": data.get("run"),
            }),
        )

    # ------------------------------------------------------------ what it implies

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.detector.modalities

    def describe(self) -> dict[str, Any]:
        """What a report or the service shows of the detector: the record less the backbone's
        architecture, the training features' settings and where its weights came from."""
        data = self.to_json()
        prov = data.pop("provenance")
        for key in ("format", "backbone_config"):
            data.pop(key)
        return {**data, "features": self.feature_expect(), "backbone_weights": prov["backbone_weights"] or {},
                "trained": prov["trained"], "fakes": prov["fakes"], "fake_methods": prov["fake_methods"]}

    def flow_settings(self) -> FlowConfig | None:
        """The flow to compute for this detector, as it was computed for its training; None
        without a flow modality. An error when it cannot be rebuilt."""
        if "flow" not in self.modalities:
            return None
        if self.flow is None:
            raise ConfigError("the detector's record has no flow settings: it cannot be fed")
        if self.flow.method.startswith("raft") and self.flow.init == "random":
            raise ConfigError(
                "this detector was trained on RAFT flow from random weights, which cannot be rebuilt: "
                "retrain on flow from saved weights (--flow-weights FILE)")
        return self.flow

    def depth_settings(self, precision: str | None = None) -> DepthConfig | None:
        """The depth model to run for this detector (``precision`` overrides the one it was
        trained with); None without a depth modality. An error when it cannot be rebuilt."""
        if "depth" not in self.modalities:
            return None
        if self.depth is None:
            raise ConfigError("the detector's record has no depth settings: it cannot be fed")
        if self.depth.init == "random":
            raise ConfigError(
                "this detector was trained on depth from a randomly initialised model, which cannot be "
                "rebuilt: save the depth model to a directory (save_pretrained) and compute depth with it")
        return self.depth.updated({"precision": precision})

    def rule(self, aggregation: str = "mean") -> VerdictRule:
        """How this detector's ``aggregation`` score becomes a verdict (threshold, calibration)."""
        return verdict_rule(self.verdict, aggregation)

    def feature_expect(self) -> dict[str, dict[str, Any]]:
        """What the training artifacts' metadata said, per modality: artifacts read for this
        detector (evaluation, compression checks) must say the same."""
        out: dict[str, dict[str, Any]] = {}
        if self.flow is not None:
            out["flow"] = {**self.flow.record(), **({"weights": self.provenance.flow_weights}
                                                    if self.provenance.flow_weights else {})}
            if self.flow.method.startswith("raft"):
                out["flow"].pop("raft_weights", None)  # the file's path may be written either way
        if self.depth is not None:
            out["depth"] = {"model": self.depth.model, "init": self.depth.init, "input_size": self.depth.input_size}
            if self.provenance.depth_weights:
                out["depth"]["weights"] = self.provenance.depth_weights
        return out


def features_from_artifacts(
    modalities: tuple[str, ...], meta: Mapping[str, Mapping[str, Any]], data: DataConfig,
) -> tuple[FlowConfig | None, DepthConfig | None, str | None, dict[str, Any] | None]:
    """(flow settings, depth settings, flow weights, depth weights) from the metadata of the flow
    and depth artifacts a detector was trained on (``{"flow": meta, "depth": meta}``)."""
    flow = depth = None
    flow_weights = depth_weights = None
    if "flow" in modalities and "flow" in meta:
        rec = dict(meta["flow"])
        flow_weights = rec.get("weights")
        # First-schema records dropped raft_weights; the weights they recorded name the file.
        if (str(rec.get("method", "")).startswith("raft") and flow_weights
                and not str(flow_weights).startswith(("http:", "https:")) and flow_weights != "random"):
            rec.setdefault("raft_weights", flow_weights)
        flow = FlowConfig.from_dict(_known(FlowConfig, rec))
    if "depth" in modalities and "depth" in meta:
        rec = dict(meta["depth"])
        depth_weights = rec.get("weights")
        # ... and the depth precision, which the artifact folder's name still says.
        if data.depth.endswith("-int8"):
            rec.setdefault("precision", "int8")
        depth = DepthConfig.from_dict(_known(DepthConfig, rec))
    return flow, depth, flow_weights, depth_weights
