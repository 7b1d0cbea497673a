"""The representation of a query region at a traced layer, decomposed into the shares of
training that built it (Pfahler & Morik 2021), from a run's ``train.trace`` snapshots.

The traced layer ``f`` (a convolution, or batch norm in eval mode) is linear in its
parameters θ and ``f(x; 0) = 0``. Training recorded ``θ_T = θ_0 + Σ_s U_s + R``
(:mod:`falsecli.method.tracing`), so for the layer's input ``x`` at the final weights

    f(x; θ_T) = f(x; θ_0) + Σ_s f(x; U_s) + f(x; R)

exactly, at every pixel. The layer's output is upsampled to the section's size as the network
upsamples its logits (bilinear, also linear), and each share's contribution is read along a
fixed direction ``B`` (per channel and pixel): the region's final representation summed over
its pixels, normalised (``along``), and for the classifier the labelled class's logit minus
the strongest other class's at each region pixel (``margin``; the predicted class's where the
pixel is wrong: what decides a forgotten pixel).
Since ``⟨f(x; θ), B⟩`` is linear in θ it equals ``⟨θ, G⟩`` with ``G = ∇_θ ⟨f(x; θ), B⟩``, the
same for every θ: every share of every snapshot costs one dot product.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from falsecli.core.errors import FalseCliError

#: the layer whose output channels are the classes (``margin`` is defined there)
CLASSIFIER = "classifier.4"


@dataclass(frozen=True)
class Readout:
    """Directions along which contributions are read: per name, ``G`` per parameter of the
    layer, and what the final weights give along it (the sum the parts must add up to)."""

    grads: dict[str, dict[str, torch.Tensor]]
    final: dict[str, float]
    directions: dict[str, torch.Tensor]


def layer_input(model: nn.Module, layer: str, image: np.ndarray) -> torch.Tensor:
    """The input (1, C, h, w) of module ``layer`` for the section ``image`` (eval mode)."""
    module = dict(model.named_modules()).get(layer)
    if not isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
        raise FalseCliError(f"config key 'trace.layer' is {layer!r}; it must name a traced "
                            "convolution or batch norm, e.g. classifier.4")
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.eval()(torch.from_numpy(image).to(device)[None, None])
    finally:
        handle.remove()
    return seen[0]


def _output(module: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor,
            size: tuple[int, int]) -> torch.Tensor:
    """``f(x; params)`` upsampled to the section's ``size`` (1, C, H, W)."""
    out = functional_call(module, dict(params), (x,))
    return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


def readout(module: nn.Module, x: torch.Tensor, region: np.ndarray, labels: np.ndarray,
            ignore_index: int, margin: bool) -> tuple[Readout, torch.Tensor]:
    """The directions ``along`` (and ``margin``) for ``region``'s labelled pixels; returns
    them with the final representation (1, C, H, W)."""
    module = module.eval()
    params = {n: p.detach() for n, p in module.named_parameters()}
    size = tuple(region.shape)
    device = x.device
    use = torch.from_numpy(region & (labels != ignore_index)).to(device)
    if not bool(use.any()):
        raise FalseCliError("the query region holds no labelled pixel — choose another class, "
                            "mask or section")
    with torch.no_grad():
        final = _output(module, params, x, size)
    total = (final[0] * use).sum((1, 2))
    directions = {"along": use * (total / total.norm().clamp_min(1e-30))[:, None, None]}
    if margin:
        n = final.shape[1]
        lab = torch.from_numpy(labels.astype(np.int64)).to(device).clamp_max(n - 1)
        rival = final[0].masked_fill(F.one_hot(lab, n).permute(2, 0, 1).bool(), -torch.inf)
        onehot = F.one_hot(lab, n) - F.one_hot(rival.argmax(0), n)
        directions["margin"] = use * onehot.permute(2, 0, 1)
    grads, values = {}, {}
    for name, b in directions.items():
        theta = {n: p.clone().requires_grad_(True) for n, p in params.items()}
        value = (_output(module, theta, x, size)[0] * b).sum()
        grads[name] = dict(zip(theta, torch.autograd.grad(value, list(theta.values()))))
        values[name] = float(value.detach())
    return Readout(grads, values, directions), final


def read(readout_: Readout, params: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Per direction, ``⟨θ, G⟩`` for a stack of parameter sets ``params`` (each (S, *shape),
    keyed by the layer's parameter names): (S,) float64."""
    out = {}
    for name, grads in readout_.grads.items():
        out[name] = sum((params[n].double().flatten(1) @ g.double().flatten().to(
            params[n].device)) for n, g in grads.items()).cpu().numpy()
    return out


def pixel_map(module: nn.Module, x: torch.Tensor, share: Mapping[str, torch.Tensor],
              direction: torch.Tensor) -> np.ndarray:
    """One share's contribution per pixel of the section (H, W) along ``direction`` (one of
    :class:`Readout`'s): the map sums to the share's value of :func:`read`."""
    with torch.no_grad():
        part = _output(module, share, x, direction.shape[-2:])[0]
        return (part.double() * direction).sum(0).float().cpu().numpy()
