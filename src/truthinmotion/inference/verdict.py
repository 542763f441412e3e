"""The verdict: what ``tim detect``, the service and evaluation say about a video (the README's
schema), its strict JSON form, and the JSON-lines log of verdicts that a re-run resumes from."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence


__all__ = ["JsonLines", "Verdict", "to_json"]


@dataclass
class Verdict:
    video: str
    status: str  # ok | no_face | unreadable | truncated | too_short | too_large | non_finite | error
    reason: str = ""
    probability: float | None = None  # calibrated probability that the video is fake
    label: str | None = None  # fake | real: probability >= threshold
    threshold: float | None = None  # on the probability (the score threshold, calibrated)
    score: float | None = None  # the frame scores aggregated, uncalibrated
    score_threshold: float | None = None  # chosen on validation videos for this aggregation
    aggregation: str = "mean"
    calibration: str = "identity"  # platt | identity (a detector trained without calibration)
    track: int | None = None  # the face that decided the verdict; frame_scores are its own
    tracks: list[dict[str, Any]] = field(default_factory=list)  # every face: see the README
    frame_index: list[int] = field(default_factory=list)
    frame_scores: list[float | None] = field(default_factory=list)  # None: no face at that point
    faces: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    # --early-stop: its error bound, the points scored of all with a face, whether it stopped early
    early_stop: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, str] = field(default_factory=dict)  # what ran each model, at what precision

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def to_json(verdicts: Sequence[Verdict]) -> str:
    """Strict JSON (no NaN or Infinity tokens): a non-finite number becomes null."""
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return json.dumps([clean(asdict(v)) for v in verdicts], indent=2, allow_nan=False)


class JsonLines:
    """A file of one verdict per line, appended and flushed as each video finishes. Reading it
    back gives the verdicts already there (by resolved video path), so a re-run skips them; a
    line cut short by a kill is dropped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def done(self) -> dict[str, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        text = self.path.read_text()
        if text and not text.endswith("\n"):  # the last write was cut short: keep whole lines
            text = text[: text.rfind("\n") + 1]
            self.path.write_text(text)
        out = {}
        for line in text.splitlines():
            if line.strip():
                record = json.loads(line)
                out[str(Path(record["video"]).resolve())] = record
        return out

    def append(self, verdict: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(json.loads(to_json([verdict]))[0], separators=(",", ":"))
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
