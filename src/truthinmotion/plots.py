"""Plots a person reads: the score of a video over time."""

from __future__ import annotations

from pathlib import Path
from .verdict import Verdict

__all__ = ["plot_scores"]


def plot_scores(verdict: Verdict, path: Path) -> Path:
    """Score over time PNG: per-time-point scores, the video's score and its threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fps = verdict.faces.get("fps") or 25.0
    t = [i / fps for i, s in zip(verdict.frame_index, verdict.frame_scores) if s is not None]
    s = [x for x in verdict.frame_scores if x is not None]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(t, s, "o-", ms=3, label="time point")
    ax.axhline(verdict.score_threshold, color="k", ls="--", lw=0.8, label=f"threshold ({verdict.aggregation})")
    ax.axhline(verdict.score, color="r", lw=1,
               label=f"video {verdict.aggregation}: {verdict.score:.3f}; probability {verdict.probability:.3f} ({verdict.label})")
    ax.set(ylim=(0, 1), xlabel="seconds", ylabel="score (uncalibrated)", title=Path(verdict.video).name)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
