"""``tim detect``: score videos with a trained detector, every stage in memory, no work directory.

The run directory says everything: the faces settings, the flow and depth settings and weights
the detector was trained on, its preprocessing, and its verdict rule for each aggregation
(threshold and calibration, :mod:`truthinmotion.models.calibration`). For each video: the score
(the frame probabilities aggregated, the mean by default), the calibrated probability that its
face was manipulated, a label at the aggregation's threshold, per-time-point scores, the faces
found and the time each stage took. A video that cannot be decoded or shows no face gets a
status and a reason instead of a score.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence


from ..core.errors import ConfigError
from ..data.formats import VIDEO_SUFFIXES
from ..core.io import atomic_write_text
from ..backends.weights import check_folder, resolve_folder
from ..execution.preflight import check_writable, preflight
from ..reports.page import write_report
from ..execution.engine import LOCAL, Engine
from ..reports.plots import plot_scores
from .config import DetectConfig
from .scorer import model_info
from .verdict import Verdict, to_json

__all__ = ["check_outputs", "detect", "expand_inputs"]

log = logging.getLogger(__name__)


def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Video files from files and directories (recursively, by suffix); errors for missing paths."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_SUFFIXES and q.is_file()))
        elif p.exists():
            out.append(p)
        else:
            raise ConfigError(f"not found: {p}")
    if not out:
        raise ConfigError("no videos to score")
    return out


def check_outputs(inputs: Sequence[Path], *outputs: str | Path | None) -> None:
    """Refuse, before any work, an output that cannot be written or that is one of the inputs."""
    sources = {p.resolve() for p in inputs}
    for out in outputs:
        if out is None:
            continue
        path = Path(out)
        if path.resolve() in sources:
            raise ConfigError(f"{path} is one of the videos to score: choose another output file")
        if path.is_dir():
            raise ConfigError(f"{path} is a directory: give a file name for the output")
        check_writable(path.parent)


def _write(path: Path, text: str) -> Path:
    """Write ``text`` atomically; if that fails after the work is done, keep it beside in the
    temporary directory and say where, rather than lose it."""
    try:
        atomic_write_text(path, text)
        return path
    except OSError as err:
        fd, rescue = tempfile.mkstemp(prefix=f"tim-{path.stem}-", suffix=path.suffix)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        log.error("could not write %s (%s); the results are in %s", path, err, rescue)
        return Path(rescue)


def _plot_names(paths: Sequence[Path]) -> dict[Path, str]:
    """A plot and page file name per video: its stem; where stems repeat, its file name
    (``a.mp4`` and ``a.avi`` in one folder); where file names repeat too, with a short hash of
    its folder."""
    import hashlib
    from collections import Counter

    stems = Counter(p.stem for p in paths)
    names = Counter(p.name for p in set(paths))

    def name(p: Path) -> str:
        if stems[p.stem] == 1:
            return p.stem
        if names[p.name] == 1:
            return p.name.replace(".", "-")
        return f"{p.stem}-{hashlib.sha1(str(p.resolve().parent).encode()).hexdigest()[:8]}"

    out = {p: name(p) for p in paths}
    taken = Counter(out[p] for p in set(paths))  # "a-mp4" of a.mp4 may also be another file's stem
    return {p: n if taken[n] == 1 else f"{n}-{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]}"
            for p, n in out.items()}


def detect(
    videos: Sequence[str | Path],
    run_dir: str | Path,
    *,
    device: str = "cpu",
    aggregation: str = DetectConfig.aggregation,
    json_out: str | Path | None = None,
    csv_out: str | Path | None = None,
    jsonl_out: str | Path | None = None,
    plot_dir: str | Path | None = None,
    report_dir: str | Path | None = None,
    evidence_points: int = DetectConfig.evidence_points,
    progress: bool = True,
    workers: int = DetectConfig.workers,
    batch_size: int = DetectConfig.batch_size,
    engine: Engine = LOCAL,
    runtime: str = DetectConfig.runtime,
    early_stop: float | None = DetectConfig.early_stop,
    depth_precision: str | None = DetectConfig.depth_precision,
) -> list[Verdict]:
    """Score every video; write JSON / CSV / JSON lines / plots / report pages where asked.
    Failures are verdicts, not errors.

    Outputs are checked before any video is scored; if writing one still fails, the results go
    to a file in the temporary directory and the log says where. ``jsonl_out`` gets each
    verdict as its video finishes, and the videos already in it are not scored again (their
    verdicts are read back, so the other outputs still list every video). ``workers`` CPU
    processes (or Ray actors) prepare videos for a model stage that scores ``batch_size``
    pictures at a time across videos (:mod:`.batching`). ``runtime``, ``early_stop`` and
    ``depth_precision``: see :class:`Scorer`. The settings' defaults are :class:`DetectConfig`'s.
    """
    from tqdm.auto import tqdm

    from .verdict import JsonLines
    from .batching import stream_verdicts

    if early_stop is not None and report_dir is not None:
        raise ConfigError("--early-stop leaves points unscored, which the evidence of --report needs: use one or "
                          "the other")
    preflight(models=[lambda: check_folder(run_dir, what="--model")])
    run_dir = resolve_folder(run_dir, what="detector")  # once: workers and actors get the local folder
    paths = expand_inputs(videos)
    check_outputs(paths, json_out, csv_out, jsonl_out)
    for flag, folder in (("--plot", plot_dir), ("--report", report_dir)):
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise ConfigError(f"{flag} {folder} is a file: give a directory")
        if folder is not None:
            check_writable(folder)
    lines = JsonLines(jsonl_out) if jsonl_out else None
    # A verdict that says the model stage failed (status error) may be a passing trouble (memory,
    # a device): it is scored again; every other status is final.
    done = {k: Verdict(**v) for k, v in lines.done().items() if v["status"] != "error"} if lines else {}
    todo = [p for p in paths if str(p.resolve()) not in done]
    if done:
        log.info("%d of %d videos already have a verdict in %s; scoring the other %d",
                 len(paths) - len(todo), len(paths), jsonl_out, len(todo))
    names = _plot_names(paths)
    pages = {str(p): str(Path(report_dir) / f"{names[p]}.html") for p in todo} if report_dir else None
    if report_dir:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
    scored: dict[str, Verdict] = {}
    info = model_info(run_dir) if report_dir else None
    stream = stream_verdicts(todo, run_dir, device=device, aggregation=aggregation, workers=workers,
                             batch_size=batch_size, evidence=evidence_points if report_dir else 0, pages=pages,
                             engine=engine, runtime=runtime, early_stop=early_stop,
                             depth_precision=depth_precision)
    bar = tqdm(total=len(todo), desc="detect", unit="video", disable=not progress or len(todo) < 2)
    finished = False
    try:
        for v, evidence in stream:
            p = Path(v.video)
            if lines:  # first: the verdict is kept whatever happens to its plot or page
                lines.append(v)
            scored[str(p.resolve())] = v
            if not v.ok:
                log.warning("%s: %s: %s", p, v.status, v.reason)
            elif plot_dir:
                Path(plot_dir).mkdir(parents=True, exist_ok=True)
                plot_scores(v, Path(plot_dir) / f"{names[p]}.png")
            if report_dir and engine.kind == "local":
                write_report(v, evidence, info, Path(pages[v.video]))
            bar.update(1)
        finished = True
    finally:
        stream.close()
        bar.close()
        verdicts = [v for v in (scored.get(str(p.resolve())) or done.get(str(p.resolve())) for p in paths) if v]
        if not finished and scored and (json_out or csv_out):
            log.warning("stopped after %d of %d videos: %s hold the verdicts so far", len(verdicts), len(paths),
                        " and ".join(str(o) for o in (json_out, csv_out) if o))
        if finished or scored:  # a failure before any verdict leaves earlier outputs as they were
            _write_outputs(verdicts, json_out, csv_out)
    return verdicts


def _write_outputs(verdicts: Sequence[Verdict], json_out: str | Path | None, csv_out: str | Path | None) -> None:
    if json_out:
        _write(Path(json_out), to_json(verdicts))
    if csv_out:
        fields = ["video", "status", "probability", "label", "threshold", "score", "score_threshold", "aggregation",
                  "time_points", "time_points_with_face", "seconds", "reason"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows({"video": v.video, "status": v.status, "probability": v.probability, "label": v.label,
                     "threshold": v.threshold, "score": v.score, "score_threshold": v.score_threshold,
                     "aggregation": v.aggregation, "time_points": v.faces.get("time_points"),
                     "time_points_with_face": v.faces.get("time_points_with_face"),
                     "seconds": v.timings.get("total"), "reason": v.reason} for v in verdicts)
        _write(Path(csv_out), buf.getvalue())
