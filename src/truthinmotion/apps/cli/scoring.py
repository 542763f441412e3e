"""Scoring videos: ``tim detect`` and ``tim serve``."""

from __future__ import annotations

import argparse
import os

from ...core.errors import ConfigError
from .options import (Command, Section, common, config_option, device, engine, engine_options, fraction, positive,
                      sections, settings)

# ---------------------------------------------------------------- detect


def _add_detect(p: argparse.ArgumentParser) -> None:
    from ...backends.runtime import PRECISIONS, RUNTIMES
    from ...core.metrics import AGGREGATIONS
    from ...inference.config import DetectConfig

    p.add_argument("videos", nargs="+", help="video files or directories")
    p.add_argument("--model", required=True, help="run directory, exported folder, or hub id org/name[@revision]")
    p.add_argument("--json", dest="json_out", help="write every verdict as JSON here")
    p.add_argument("--csv", dest="csv_out", help="write one row per video here")
    p.add_argument("--plot", dest="plot_dir", help="write a score-over-time PNG per video into this directory")
    p.add_argument("--report", dest="report_dir", help="write an evidence page (HTML, one file) per video here")
    p.add_argument("--jsonl", dest="jsonl_out", help="append each verdict here as its video finishes; a re-run "
                   "skips the videos already in it")
    detect = Section(p, "detect", DetectConfig)
    detect("--aggregation", "aggregation", choices=list(AGGREGATIONS), help="a face's score from its points")
    p.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    detect("--workers", "workers", type=positive,
           help="CPU processes (Ray actors) decoding, finding faces and flow for the model stage")
    detect("--batch-size", "batch_size", type=positive, help="pictures per model pass, across videos")
    detect("--runtime", "runtime", choices=RUNTIMES,
           help="depth and detector in ONNX Runtime or PyTorch; auto: ONNX Runtime on the CPU, same scores within "
                "1e-5, about 2x faster")
    detect("--early-stop", "early_stop", type=fraction, metavar="ERROR",
           help="score half of each face's points first and stop where the label is already decided, wrong with "
                "probability at most ERROR (e.g. 0.01); the score is then the mean of the points scored. Off by "
                "default; not with --report")
    detect("--depth-precision", "depth_precision", choices=PRECISIONS,
           help="depth in ONNX Runtime dynamic int8 (CPU): ~1.6x faster depth, scores slightly off "
                "(benchmarks/detect.py); default: the precision the detector's depth was computed at")
    engine_options(p)
    common(p, ["detect"])


def _detect(args: argparse.Namespace) -> int:
    from ...inference.config import DetectConfig
    from ...inference.detect import detect

    cfg = settings(args, DetectConfig(), "detect")
    verdicts = detect(args.videos, args.model, device=args.device, json_out=args.json_out, csv_out=args.csv_out,
                      jsonl_out=args.jsonl_out, plot_dir=args.plot_dir, report_dir=args.report_dir,
                      progress=not args.quiet, engine=engine(args), **cfg.to_dict())
    for v in verdicts:
        if v.ok:
            print(f"{v.video}: {v.label} (p={v.probability:.3f}, threshold {v.threshold:.3f}, "
                  f"{v.faces['time_points_with_face']} time points, {v.timings['total']:.2f}s)")
        else:
            print(f"{v.video}: {v.status}: {v.reason}")
    return 0 if all(v.ok for v in verdicts) else 1


DETECT = Command("detect", "score videos with a trained detector (exit 1 if any video could not be scored)",
                 _add_detect, _detect)


# ---------------------------------------------------------------- serve


def _add_serve(p: argparse.ArgumentParser) -> None:
    from ..serve.config import ServeConfig

    p.add_argument("--model", required=True, action="append", metavar="[NAME=]PATH_OR_ID",
                   help="a detector: run directory, exported folder, or hub id org/name[@revision]; repeat as "
                   "NAME=PATH_OR_ID for several (the first is the default; a job names one in its model field)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve = Section(p, "serve", ServeConfig)
    serve("--workers", "workers", type=positive, help="scoring threads, each with its own models")
    serve("--queue", "queue", type=positive, help="jobs queued or running at most; beyond: 503")
    serve("--max-upload-mb", "max_upload_mb", type=float)
    serve("--max-seconds", "max_seconds", type=float, help="longest video accepted, seconds")
    serve("--data-dir", "data_dir", help="jobs database, uploads, pages")
    serve("--token", "token", default_text="$TIM_TOKEN", help="require Authorization: Bearer TOKEN")
    serve("--keep-uploads", "keep_uploads", action="store_true", help="keep uploaded videos after scoring")
    serve("--keep-hours", "keep_hours", type=float,
          help="a finished job, its upload and its page are removed this long after it ended")
    serve("--device", "device", type=device, help="cpu or cuda")
    config_option(p, ["serve"])


def _serve(args: argparse.Namespace) -> int:
    from ..serve.config import ServeConfig

    try:
        from ..serve.app import serve
    except ImportError as err:
        raise ConfigError(f"tim serve needs the serve extra ({err.name} is missing): "
                          "pip install 'truthinmotion[serve]'") from None

    options = sections(args, ["serve"])["serve"]
    # The token: --token, else the file's, else $TIM_TOKEN; an empty one asks for none.
    options["token"] = options.get("token", os.environ.get("TIM_TOKEN")) or None
    # --model is required on the command line, so it wins over a file's serve.model
    models = tuple(args.model)
    serve(ServeConfig(model=models).updated({**options, "model": models}), args.host, args.port)
    return 0


SERVE = Command("serve", "an HTTP service: JSON API, web page, evidence pages", _add_serve, _serve)
