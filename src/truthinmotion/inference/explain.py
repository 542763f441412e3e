"""Where the detector looked: a saliency map per modality for chosen time points.

Saliency is gradient x (input - baseline), the first-order term of integrated gradients
(Sundararajan et al., "Axiomatic Attribution for Deep Networks", 2017): the gradient of the fake
logit with respect to each input picture, times how the picture differs from a baseline that
shows nothing (the encoding of a still face: no motion, flat depth; black for RGB), its absolute
value summed over colour channels, resized to the crop and normalised to sum to 1 per picture.
It shows which pixels of that picture, where they differ from "nothing happening", the fake score
depends on most: not a proof that an artefact is there. Measured in the tests: a detector
trained on fakes whose own motion is confined to one half of the face puts about 96% of this
saliency on that half (plain gradient x input: about 50%, chance). It was chosen over attention rollout of the DINOv2 class token (Abnar and Zuidema 2020)
because it follows the logit through the head and either fusion (rollout stops at each encoder's
class token and ignores what the head does with it), gives one map per modality picture, and
needs nothing of the backbone but gradients. It needs a PyTorch detector: an ONNX variant has no
gradients, and :func:`explain` says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from ..backends.runtime import autocast_context

__all__ = ["explain", "neutral_inputs"]


def neutral_inputs(modalities: tuple[str, ...], cfg: Any, pre: Any, size: int, box_scale: float = 1.3
                   ) -> dict[str, torch.Tensor]:
    """Backbone inputs ``[1, 3, H, W]`` of pictures that show nothing, encoded as the detector
    encodes: zero flow, flat depth, a black crop."""
    from ..models.inputs import encode_pictures, to_backbone

    zeros = {"flow": np.zeros((1, size, size, 2), np.float32), "depth": np.zeros((1, size, size), np.float32),
             "rgb": np.zeros((1, size, size, 3), np.uint8)}
    return to_backbone(encode_pictures(zeros, modalities, cfg, box_scale), pre)


def explain(model: Any, inputs: dict[str, torch.Tensor], size: int, device: str = "cpu", amp: str = "off",
            baseline: dict[str, torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """Saliency ``{modality: [N, size, size] float32}``, each map summing to 1 (a map of zeros
    where the logit does not depend on the picture at all). ``baseline``: per modality, the
    backbone input of a picture that shows nothing (:func:`neutral_inputs`); zeros if absent."""
    if getattr(model, "source", None) is not None:
        model = model.source  # ONNX Runtime scored; its PyTorch source has the gradients
    if not isinstance(model, torch.nn.Module):
        raise ConfigError("explanations need a PyTorch detector (an ONNX variant has no gradients): "
                          "use the run it was compressed from")
    x = {m: t.detach().to(device).float().requires_grad_(True) for m, t in inputs.items()}
    with torch.enable_grad(), autocast_context(device, amp):
        logit = model(x).logit.float()
    # The pictures' gradients only (pictures are independent: each one's is its own), none in the
    # weights: threads that share one detector (tim serve's workers) explain at once without a race.
    grads = dict(zip(x, torch.autograd.grad(logit.sum(), list(x.values()))))
    out = {}
    for m, t in x.items():
        base = (baseline or {}).get(m)
        diff = t - base.to(device).float() if base is not None else t
        sal = (grads[m] * diff).abs().sum(1, keepdim=True).detach()  # [N, 1, H, W]
        sal = F.interpolate(sal, size=(size, size), mode="bilinear", align_corners=False)[:, 0].clamp(min=0)
        total = sal.flatten(1).sum(1).view(-1, 1, 1)
        out[m] = torch.where(total > 0, sal / total.clamp(min=1e-30), torch.zeros_like(sal)).cpu().numpy()
    return out
