"""The settings of pseudo-fakes (:class:`SynthConfig`): one dataclass, every field commented; a
light module, so ``tim`` parses its options without torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.config import Settings, require

__all__ = ["ALL_KINDS", "FAMILIES", "KINDS", "SynthConfig"]

# blend: one blend for the whole clip; blend-drift: its offset, scale and mask drift over time;
# frame-wise: an independent blend in every frame; timing: the face from neighbouring frames.
KINDS = ("blend", "blend-drift", "frame-wise", "timing")
# Frame-wise artefacts of other families (benchmarks/learning.py), made on request only: an
# independent small warp, colour gain or seam of the face in every frame.
FAMILIES = ("warp", "flicker", "seam")
ALL_KINDS = (*KINDS, *FAMILIES)


@dataclass(frozen=True)
class SynthConfig(Settings):
    kinds: tuple[str, ...] = KINDS  # the kinds made (see KINDS; FAMILIES too on request)
    per_video: int = 1  # twins per real video, the kinds dealt in turn from a start fixed by the video's id
    seed: int = 0  # with a twin's id, seeds every draw of that twin: a re-run makes the same twin
    # A blend (Self-Blended Images, Shiohara & Yamasaki, CVPR 2022): the face of the frame itself,
    # jittered as below, blended back through a feathered, deformed face mask.
    colour: float = 0.06  # sd of the gain of each colour channel
    brightness: float = 6.0  # sd of the offset of each colour channel, in grey levels
    sharpness: float = 0.6  # sd of the unsharp-mask amount (below 0: blurred)
    scale: float = 0.03  # sd of the source's scale about the face centre
    shift: float = 0.02  # sd of the source's offset, as a share of the face box's side
    grow: tuple[float, float] = (0.8, 1.1)  # range of the mask ellipse's size, relative to the face box
    elastic: float = 0.06  # amplitude of the mask outline's deformation, a share of its radius
    feather: float = 0.08  # Gaussian sd of the mask's edge, a share of the face box's side
    # blend-drift (video-level blending's "facial feature drift"): slow or in jumps, drawn per twin
    drift: float = 0.05  # slow: amplitude of the offset's and scale's swing (a share of the side)
    drift_period: tuple[float, float] = (8.0, 30.0)  # slow: range of the swing's period, in frames
    jump: float = 0.03  # jumps: sd of each jump of offset, scale and mask size
    jump_rate: float = 0.25  # jumps: probability of a jump at each frame
    # timing (resampled timing, as lip-sync manipulations leave): the face from a frame at most
    # this many frames away, never the frame itself
    timing: int = 2
    write_videos: bool = False  # also write each twin's sampled frames to WORKDIR/synth/<id>.mp4 (to look at)

    def check(self) -> None:
        bad = sorted(set(self.kinds) - set(ALL_KINDS))
        require(bool(self.kinds) and not bad, f"kinds: {bad or 'none'} not allowed; choose from {', '.join(ALL_KINDS)}")
        require(len(set(self.kinds)) == len(self.kinds), "kinds: each kind once")
        require(1 <= self.per_video <= 64, "per_video: 1 to 64 twins per real video")
        require(all(v >= 0 for v in (self.colour, self.brightness, self.sharpness, self.scale, self.shift,
                                     self.elastic, self.drift, self.jump)), "jitters: 0 or more")
        require(len(self.grow) == 2 and 0.3 <= self.grow[0] <= self.grow[1] <= 2.0, "grow: two sizes, 0.3 to 2.0")
        require(0.0 < self.feather <= 0.5, "feather: above 0, at most 0.5 of the face box")
        require(len(self.drift_period) == 2 and 2 <= self.drift_period[0] <= self.drift_period[1],
                "drift_period: two periods in frames, at least 2")
        require(0.0 <= self.jump_rate <= 1.0, "jump_rate: a probability")
        require(1 <= self.timing <= 30, "timing: 1 to 30 frames")

    def recipe(self) -> dict[str, Any]:
        """What makes a twin what it is (every setting but which twins and where they go): a
        twin made with another recipe is made again."""
        d = self.to_dict()
        for k in ("kinds", "per_video", "write_videos"):
            d.pop(k)
        return d
