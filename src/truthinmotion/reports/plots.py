"""Plots a person reads: the score of a video over time, and the figures every report draws on.

Figures are :class:`matplotlib.figure.Figure` objects of their own, never pyplot's global state:
the service draws pages from several scorer threads at once, and pyplot is not thread-safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["figure", "plot_scores", "save_figure"]


def figure(width: float, height: float) -> tuple[Any, Any]:
    """A new figure ``width`` x ``height`` inches with one axes: (figure, axes)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot()


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Lay out and write ``fig`` (PNG by the suffix); nothing to close, nothing global kept."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return Path(path)


def plot_scores(verdict: Any, path: Path) -> Path:
    """Score over time PNG of a :class:`~truthinmotion.inference.verdict.Verdict`: per-time-point
    scores, the video's score and its threshold."""
    fps = verdict.faces.get("fps") or 25.0
    t = [i / fps for i, s in zip(verdict.frame_index, verdict.frame_scores) if s is not None]
    s = [x for x in verdict.frame_scores if x is not None]
    fig, ax = figure(6, 3)
    ax.plot(t, s, "o-", ms=3, label="time point")
    ax.axhline(verdict.score_threshold, color="k", ls="--", lw=0.8, label=f"threshold ({verdict.aggregation})")
    ax.axhline(verdict.score, color="r", lw=1,
               label=f"video {verdict.aggregation}: {verdict.score:.3f}; probability {verdict.probability:.3f} "
                     f"({verdict.label})")
    ax.set(ylim=(0, 1), xlabel="seconds", ylabel="score (uncalibrated)", title=Path(verdict.video).name)
    ax.legend(fontsize=7, loc="upper right")
    return save_figure(fig, path)
