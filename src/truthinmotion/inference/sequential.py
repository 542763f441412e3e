"""Fewer points when the verdict is already clear: a two-round sequential test with a stated bound.

A video's score is the mean of its N per-point probabilities (each in [0, 1]), and its label is
which side of the threshold t that mean falls on. ``tim detect --early-stop DELTA`` scores half
of each face's points first, drawn at random for each video from a seed of its own (fresh
entropy, recorded in the verdict's ``early_stop.seed`` so the draw can be repeated); where every
face's mean of those m points is far enough from t, the other points are not scored. How far is the Hoeffding-Serfling bound for sampling
without replacement (Serfling, "Probability inequalities for the sum in sampling without
replacement", Ann. Statist. 1974; Bardenet & Maillard, Bernoulli 2015):

    P(mean of N  on the other side of t)  <=  exp(-2 m d^2 / (1 - (m - 1) / N)),  d = |mean of m - t|

so a face is decided when that is at most DELTA / T (T faces: a union bound), and the video's
label then differs from the all-points label with probability at most DELTA, the probability
being over that video's draw. Because each video draws its own points, independently of its
content and of the other videos, the bound holds for every video on its own, whatever the
video: no fixed subset of points is ever the one left unscored for all of them. Its score (the
mean of the points scored) moves by up to about d; ``benchmarks/detect.py`` reports by how much
on the shared videos. With 32 points and DELTA = 0.01, half the points decide a face whose mean
is at least 0.28 from the threshold.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["EARLY_ROUND", "draw_seed", "first_round", "margin_needed", "undecided"]

EARLY_ROUND = 0.5  # share of each face's points scored in the first round


def draw_seed() -> int:
    """A fresh seed for one video's draw (recorded, so the same points can be drawn again)."""
    return int(np.random.SeedSequence().entropy % 2**63)


def first_round(counts: list[int], seed: int) -> np.ndarray:
    """Rows (into the faces' rows laid end to end, ``counts[j]`` rows for face j) scored first:
    ``ceil(EARLY_ROUND * n)`` of each face's n rows, drawn at random from ``seed``."""
    rng = np.random.default_rng(seed)
    rows, start = [], 0
    for n in counts:
        take = math.ceil(EARLY_ROUND * n)
        rows.append(start + np.sort(rng.permutation(n)[:take]))
        start += n
    return np.concatenate(rows) if rows else np.zeros(0, np.int64)


def margin_needed(m: int, n: int, delta: float) -> float:
    """The distance from the threshold at which the mean of m of n points in [0, 1] decides the
    side of the mean of all n with error at most ``delta`` (Hoeffding-Serfling, one-sided)."""
    if m >= n:
        return 0.0
    return math.sqrt(math.log(1.0 / delta) * (1.0 - (m - 1) / n) / (2.0 * m))


def undecided(probs: np.ndarray, counts: list[int], threshold: float, delta: float) -> list[bool]:
    """Per face: whether its scored points (``probs``, NaN where not scored; ``counts[j]`` rows
    each, end to end) leave its label open at error ``delta`` shared by all the faces."""
    out, start = [], 0
    for n in counts:
        p = probs[start:start + n]
        start += n
        scored = p[~np.isnan(p)]
        if len(scored) == 0:
            out.append(True)
            continue
        need = margin_needed(len(scored), n, delta / max(1, len(counts)))
        out.append(abs(float(scored.mean()) - threshold) < need)
    return out
