"""A perceptual (feature) loss for the style-transfer generator, from the run's own network.

At the study's scale the generator's pixel L1 and the discriminator's feature matching
leave it painting blurred averages: what a reflector pattern *looks like* is not in one
pixel's amplitude. The trained segmentation network (``train/model.pt``) has learnt the
features that tell the classes of this survey apart; the generated crop should match the
real one in those features too. The backbone is used FROZEN (eval mode, batch-norm running
statistics, no gradient to its weights, never in the generator's checkpoint: a resumed
training loads it again from the same file) and nothing is downloaded.

Per tapped layer (:data:`TAPS`), the L1 of the generated crop's features against the real
crop's, over the real features' mean magnitude (each layer's term scale-free, so that no
layer dominates and ``transfer.perceptual_weight`` reads like ``l1_weight``); the terms are
averaged. Zero for identical images.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from falsecli.method.model import MODEL, load_model

#: the backbone layers whose outputs are compared (strides 4 and 8 of the input)
TAPS = ("layer1", "layer2")


class FeatureLoss(nn.Module):
    """The frozen backbone up to the last of ``taps``, and the loss on its features."""

    def __init__(self, backbone: nn.Module, taps: tuple[str, ...] = TAPS) -> None:
        super().__init__()
        children = list(backbone.named_children())
        names = [name for name, _ in children]
        self.layers = nn.Sequential(OrderedDict(children[:max(names.index(t) for t in taps) + 1]))
        self.taps = taps
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureLoss:
        """Always eval: the trained network's batch-norm statistics, never the crops'."""
        return super().train(False)

    def features(self, x: Tensor) -> list[Tensor]:
        """(B, 1, H, W) images in ``ds.image`` units -> the tapped layers' outputs."""
        out = []
        for name, layer in self.layers.named_children():
            x = layer(x)
            if name in self.taps:
                out.append(x)
        return out

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        """Mean over the tapped layers of L1(features) / mean |real features|."""
        with torch.no_grad():
            reference = self.features(real)
        terms = [F.l1_loss(f.float(), r.float()) / r.float().abs().mean().clamp(min=1e-6)
                 for f, r in zip(self.features(fake), reference)]
        return torch.stack(terms).mean()


def from_run(folder: Path, device: torch.device) -> FeatureLoss:
    """The feature loss of the network trained in ``folder`` (its ``model.pt``)."""
    model, _ = load_model(Path(folder) / MODEL, device)
    return FeatureLoss(model.backbone).to(device)
