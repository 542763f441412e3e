"""Perturbed copies of a video, as uploads suffer them: the DeeperForensics-1.0 set, resizing and a
bitrate cap.

The seven types at five levels are those of DeeperForensics-1.0 (Jiang et al., CVPR 2020, sec. 3.2,
and its released perturbation code), with the same parameters and arithmetic: colour saturation
(chroma in YCbCr scaled by 0.4 ... 0.0), colour contrast (pixels scaled by 0.85 ... 0.35, then
truncated), local block-wise (16 ... 80 grey 8x8 blocks times ``min(h, w) // 256``, at new places
in every frame), Gaussian noise in colour (variance 0.001 ... 0.05 in YCbCr), Gaussian blur
(kernel 7 ... 21, sigma = kernel / 6), pixelation (down- and up-scaling by 2 ... 6; the code names
it ``JPEG``) and video compression (H.264 CRF 30 ... 40). Added: what sharing services do, resizing
to 480, 360 and 240 lines (then H.264 at FFmpeg's default CRF 23) and a re-encode under a bitrate
cap. Every encode goes through FFmpeg's libx264 by PyAV, the optional extra ``robustness``.

Frame types are applied to each decoded frame (BGR, as the reference does) and written losslessly
(libx264rgb, CRF 0), so the copy differs from its source by the perturbation alone; encoder types
re-encode the decoded frames. Frame count and rate are kept, so the pipeline samples the same
time points as in the source. Random draws (blocks, noise) come from one seeded generator per
video, in frame order: the same seed gives the same copy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from ..core.errors import ConfigError, StageError
from ..core.io import atomic_path

__all__ = ["INSTALL", "LEVELS", "PERTURBATIONS", "Perturbation", "Perturbed", "parse_levels", "parse_perturbations",
           "perturb_frame", "perturb_video", "psnr_frames", "require_av"]

log = logging.getLogger(__name__)

INSTALL = "pip install 'truthinmotion[robustness]' (or: pip install av)"
LEVELS = (1, 2, 3, 4, 5)
BLOCK = 8  # side of a grey block (block-wise)
GREY = 128  # its value
CARRIER = {"codec": "libx264rgb", "crf": 0, "preset": "ultrafast"}  # lossless: frame types differ by themselves
DEFAULT_CRF = 23  # FFmpeg's libx264 default: what a plain re-encode of a resized video gets
PRESET = "medium"  # FFmpeg's libx264 default preset


@dataclass(frozen=True)
class Perturbation:
    code: str
    name: str
    params: tuple[float, ...]  # the parameter of each level, 1 first
    unit: str  # what the parameter is
    encoder: bool  # re-encoded by libx264 (True) or applied to each frame (False)

    def param(self, level: int) -> float:
        if not 1 <= level <= len(self.params):
            raise ConfigError(f"perturbation {self.code} has levels 1 to {len(self.params)}, not {level}")
        return self.params[level - 1]


PERTURBATIONS: dict[str, Perturbation] = {p.code: p for p in (
    Perturbation("cs", "colour saturation", (0.4, 0.3, 0.2, 0.1, 0.0), "chroma scale", False),
    Perturbation("cc", "colour contrast", (0.85, 0.725, 0.6, 0.475, 0.35), "pixel scale", False),
    Perturbation("bw", "local block-wise", (16, 32, 48, 64, 80), "grey 8x8 blocks per 256 px of the short side",
                 False),
    Perturbation("gnc", "Gaussian noise in colour", (0.001, 0.002, 0.005, 0.01, 0.05), "variance in YCbCr",
                 False),
    Perturbation("gb", "Gaussian blur", (7, 9, 13, 17, 21), "kernel size (sigma = size / 6)", False),
    Perturbation("px", "pixelation", (2, 3, 4, 5, 6), "down- and up-scaling factor", False),
    Perturbation("vc", "video compression", (30, 32, 35, 38, 40), "H.264 CRF", True),
    Perturbation("rs", "resize", (480, 360, 240), "lines (then H.264 CRF 23)", True),
    Perturbation("br", "bitrate cap", (1600, 800, 400, 200, 100), "kbit/s (H.264, buffer 2 s)", True),
)}
DEEPERFORENSICS = ("cs", "cc", "bw", "gnc", "gb", "px", "vc")


def parse_perturbations(text: str) -> tuple[str, ...]:
    """``all`` or comma-separated codes (``vc,gb``) -> codes in the table's order."""
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    if words == ["all"]:
        return tuple(PERTURBATIONS)
    bad = sorted(set(words) - set(PERTURBATIONS))
    if not words or bad:
        raise ConfigError(f"perturbations: {bad or 'none'} not known; give 'all' or some of "
                          + ", ".join(f"{p.code} ({p.name})" for p in PERTURBATIONS.values()))
    return tuple(c for c in PERTURBATIONS if c in words)


def parse_levels(text: str) -> tuple[int, ...]:
    """``1-5``, ``1,3,5`` or ``2`` -> levels, each 1 to 5."""
    try:
        out: set[int] = set()
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"levels: {text!r} is not a range like 1-5 or a list like 1,3,5") from None
    if not out or not out <= set(LEVELS):
        raise ConfigError(f"levels: {text!r}; levels are {LEVELS[0]} to {LEVELS[-1]}")
    return tuple(sorted(out))


def require_av() -> Any:
    """PyAV, or a ConfigError that says how to install it."""
    try:
        import av
    except ImportError:
        raise ConfigError(f"perturbing videos needs PyAV (FFmpeg's encoders), which is not installed: {INSTALL}") \
            from None
    return av


# ---------------------------------------------------------------- the frame types (BGR uint8 in and out)


def _to_ycbcr(bgr: np.ndarray) -> np.ndarray:
    """DeeperForensics' YCbCr: OpenCV's float conversion of 0..255 values, channels Y, Cb, Cr,
    mapped to video range as if they were in [0, 1] (its saturation and noise are defined on these
    numbers, so they are kept as they are)."""
    ycrcb = cv2.cvtColor(bgr.astype(np.float32), cv2.COLOR_BGR2YCrCb)
    out = ycrcb[..., (0, 2, 1)].copy()
    out[..., 0] = (out[..., 0] * (235 - 16) + 16) / 255.0
    out[..., 1:] = (out[..., 1:] * (240 - 16) + 16) / 255.0
    return out


def _from_ycbcr(ycbcr: np.ndarray) -> np.ndarray:
    x = ycbcr.astype(np.float32)
    x[..., 0] = (x[..., 0] * 255.0 - 16) / (235 - 16)
    x[..., 1:] = (x[..., 1:] * 255.0 - 16) / (240 - 16)
    return cv2.cvtColor(np.ascontiguousarray(x[..., (0, 2, 1)]), cv2.COLOR_YCrCb2BGR)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Truncated to uint8 as the reference's ``astype`` does; clipped first so that float error
    just outside 0..255 cannot wrap around."""
    return np.clip(x, 0, 255).astype(np.uint8)


def _saturation(img: np.ndarray, s: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    y = _to_ycbcr(img)
    y[..., 1:] = 0.5 + (y[..., 1:] - 0.5) * s
    return _to_uint8(_from_ycbcr(y)), {}


def _contrast(img: np.ndarray, c: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    return _to_uint8(img.astype(np.float32) * c), {}


def _blocks(img: np.ndarray, per_256: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    h, w = img.shape[:2]
    n = min(h, w) // 256 * int(per_256)  # 0 below 256 px, as defined
    out = img.copy()
    xs = rng.integers(0, w - 1 - BLOCK, n, endpoint=True)
    ys = rng.integers(0, h - 1 - BLOCK, n, endpoint=True)
    for x, y in zip(xs, ys):
        out[y:y + BLOCK, x:x + BLOCK] = GREY
    return out, {"blocks": int(n)}


def _noise(img: np.ndarray, var: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    y = _to_ycbcr(img) / 255
    noisy = (y + np.sqrt(var) * rng.standard_normal(y.shape)) * 255
    return _to_uint8(_from_ycbcr(noisy)), {}


def _blur(img: np.ndarray, k: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    k = int(k)
    return cv2.GaussianBlur(img, (k, k), k / 6), {"kernel": k, "sigma": k / 6}


def _pixelate(img: np.ndarray, f: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    h, w = img.shape[:2]
    small = (w // int(f), h // int(f))
    return cv2.resize(cv2.resize(img, small), (w, h)), {"small": list(small)}


FRAME_FUNCTIONS: dict[str, Callable[[np.ndarray, float, np.random.Generator], tuple[np.ndarray, dict]]] = {
    "cs": _saturation, "cc": _contrast, "bw": _blocks, "gnc": _noise, "gb": _blur, "px": _pixelate,
}


def perturb_frame(code: str, level: int, bgr: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One frame ``[H, W, 3]`` BGR uint8 with a frame type at a level, and what was drawn."""
    if code not in FRAME_FUNCTIONS:
        raise ConfigError(f"{code} is not applied frame by frame: use perturb_video")
    return FRAME_FUNCTIONS[code](bgr, PERTURBATIONS[code].param(level), rng)


# ---------------------------------------------------------------- videos


@dataclass
class Perturbed:
    """A perturbed copy: where, and everything needed to make it again."""

    path: Path
    code: str
    level: int
    params: dict[str, Any]  # the type's parameter, encoder settings, seed, what was drawn
    frames: int
    width: int
    height: int
    seconds: float
    drawn: dict[str, Any] = field(default_factory=dict)


def _size_for(height: int, width: int, lines: int) -> tuple[int, int]:
    """(width, height) at ``lines``, the width kept in proportion and even (``scale=-2:lines``)."""
    return max(2, round(width * lines / height / 2) * 2), lines


def _encoder(code: str, level: int, width: int, height: int) -> tuple[str, str, dict[str, str], dict[str, Any]]:
    """(codec, pixel format, encoder options, record) of a type's output stream."""
    p = PERTURBATIONS[code]
    if not p.encoder:
        opts = {"crf": str(CARRIER["crf"]), "preset": CARRIER["preset"]}
        return CARRIER["codec"], "bgr24", opts, {"carrier": dict(CARRIER)}
    if code == "vc":
        crf = int(p.param(level))
        return "libx264", "yuv420p", {"crf": str(crf), "preset": PRESET}, {"codec": "libx264", "crf": crf,
                                                                           "preset": PRESET}
    if code == "rs":
        return "libx264", "yuv420p", {"crf": str(DEFAULT_CRF), "preset": PRESET}, {
            "codec": "libx264", "crf": DEFAULT_CRF, "preset": PRESET, "scaler": "bicubic", "size": [width, height]}
    kbit = int(p.param(level))
    return "libx264", "yuv420p", {"maxrate": f"{kbit}k", "bufsize": f"{2 * kbit}k", "preset": PRESET}, {
        "codec": "libx264", "bitrate_kbit": kbit, "maxrate_kbit": kbit, "bufsize_kbit": 2 * kbit, "preset": PRESET}


def perturb_video(src: str | Path, dst: str | Path, code: str, level: int, *, seed: int = 0) -> Perturbed:
    """Write ``src`` perturbed by ``code`` at ``level`` to ``dst`` (MP4, atomically).

    Raises :class:`StageError` for a video that cannot be decoded or (resize) is not taller than
    the target, ConfigError for an unknown type or level, or without PyAV."""
    av = require_av()
    if code not in PERTURBATIONS:
        raise ConfigError(f"unknown perturbation {code!r}: one of {', '.join(PERTURBATIONS)}")
    p = PERTURBATIONS[code]
    param = p.param(level)
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise StageError("unreadable", f"file not found: {src}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    drawn: dict[str, Any] = {}
    frames = 0
    try:
        inp = av.open(str(src))
    except av.error.FFmpegError as err:
        raise StageError("unreadable", f"cannot open {src.name} as a video: {err}") from None
    with inp:
        if not inp.streams.video:
            raise StageError("unreadable", f"{src.name} has no video stream")
        stream = inp.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        out_w, out_h = width, height
        if code == "rs":
            if height <= param:
                raise StageError("not_smaller", f"{src.name} is {height} lines high: resizing to {int(param)} lines "
                                                "would enlarge it")
            out_w, out_h = _size_for(height, width, int(param))
        codec, pix_fmt, options, record = _encoder(code, level, out_w, out_h)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        with atomic_path(dst, suffix=".mp4") as tmp:
            with av.open(str(tmp), "w") as out:
                ostream = out.add_stream(codec, rate=rate)
                ostream.width, ostream.height, ostream.pix_fmt = out_w, out_h, pix_fmt
                if code == "br":
                    ostream.bit_rate = int(param) * 1000
                ostream.options = options
                try:
                    for frame in inp.decode(stream):
                        if not p.encoder:
                            bgr, drawn_now = perturb_frame(code, level, frame.to_ndarray(format="bgr24"), rng)
                            for k, v in drawn_now.items():
                                drawn.setdefault(k, v)
                            new = av.VideoFrame.from_ndarray(bgr, format="bgr24")
                        elif code == "rs":
                            new = frame.reformat(width=out_w, height=out_h, format=pix_fmt, interpolation="BICUBIC")
                        else:
                            new = frame.reformat(format=pix_fmt)
                        new.pts, new.time_base = frames, Fraction(1, 1) / rate
                        frames += 1
                        for packet in ostream.encode(new):
                            out.mux(packet)
                except av.error.FFmpegError as err:
                    if frames == 0:
                        raise StageError("unreadable", f"{src.name}: no frame could be decoded: {err}") from None
                    log.warning("%s: decoding stopped after %d frames (%s); the copy has those", src.name, frames, err)
                for packet in ostream.encode():
                    out.mux(packet)
            if frames == 0:
                raise StageError("unreadable", f"{src.name} has no decodable frames")
    params = {"type": code, "name": p.name, "level": level, "parameter": param, "unit": p.unit, "seed": seed,
              **record, **({"drawn": drawn} if drawn else {})}
    return Perturbed(dst, code, level, params, frames, out_w, out_h, time.perf_counter() - t0, drawn)


def psnr_frames(src: str | Path, copy: str | Path, indices: Sequence[int]) -> float:
    """PSNR (dB) of a copy against its source over the frames ``indices`` (the mean squared error
    of all of them; inf when equal); a copy of another size is scaled back to the source's
    (bicubic) first."""
    from .video import read_frames

    a = dict(read_frames(src, indices, rgb=False))
    b = dict(read_frames(copy, indices, rgb=False))
    err = []
    for i, x in a.items():
        y = b[i]
        if y.shape != x.shape:
            y = cv2.resize(y, x.shape[1::-1], interpolation=cv2.INTER_CUBIC)
        err.append(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
    mse = float(np.mean(err))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))
