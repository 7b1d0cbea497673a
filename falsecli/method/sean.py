"""A compact SEAN-style generator for class-specific style transfer of seismic sections.

Written from the SEAN (Zhu et al., CVPR 2020) and SPADE (Park et al., CVPR 2019) papers:

- :class:`StyleEncoder` turns an image into a feature map and average-pools it over each class's
  region, giving one style code per class (a ``classes x style_dim`` matrix). Classes absent
  from the image get a learned neutral code, so every code slot is always defined; training
  swaps random codes for the neutral ones (``code_dropout``), which teaches the generator what
  to paint for a class whose style is unknown and makes the neutral code the "average style".
- :class:`Generator` grows an image from a coarse label map through residual blocks whose
  normalisation (:class:`SeanNorm`) is modulated per pixel by the code of that pixel's class,
  blended (learned weight) with a SPADE branch that sees only the label map, with per-pixel
  noise. Because a class's code only enters the modulation of that class's pixels, replacing
  one code changes that class and leaves its neighbours (nearly) alone: the transfer of paper
  §2.2.
- :class:`MultiScaleDiscriminator`: patch discriminators on the image and its label map at
  two scales, trained with the hinge loss; their features give the feature-matching loss.

Single-channel images of any size: the networks pad to a multiple of their downsampling factor
(replicating the border) and crop back. The encoder's and generator's convolutions pad by
replicating the border too: zero padding shows the networks a dark frame around every image
(and an empty label map, i.e. "no class", around the one-hot), which the generator painted as
a frame a few pixels inside the section's edges (8 pixels deep at its coarsest scale).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

#: the generator upsamples this many times (x2 each) from its coarse label map
N_UP = 3
#: the style encoder's internal downsampling factor
ENCODER_FACTOR = 4
#: discriminator scales (full resolution, half resolution)
N_SCALES = 2
LEAK = 0.2

#: what stored weights compute with; bumped when the networks change under the same weights
#: (2: replicate instead of zero padding), so that an older ``generator.pt`` is trained again
ARCHITECTURE = 2

#: one patch discriminator's outputs: intermediate features ..., then the patch logits
DOutput = list[Tensor]


def one_hot(labels: Tensor, n_classes: int, ignore_index: int) -> Tensor:
    """(B, H, W) integer labels -> (B, K, H, W) float one-hot; ignored pixels are all zero."""
    labels = labels.long()
    valid = labels != ignore_index
    onehot = F.one_hot(torch.where(valid, labels, 0), n_classes).permute(0, 3, 1, 2)
    return onehot.float() * valid.unsqueeze(1)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad the last two dims at the bottom/right (replicating the border) to a multiple."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def region_pool(features: Tensor, onehot: Tensor, neutral: Tensor) -> Tensor:
    """Per-class average of ``features`` (B, D, H, W) over each class region of ``onehot``
    (B, K, H, W) -> codes (B, K, D); classes without pixels get ``neutral`` (K, D)."""
    area = onehot.sum(dim=(2, 3))  # (B, K)
    sums = torch.einsum("bdhw,bkhw->bkd", features, onehot.to(features.dtype))
    codes = sums / area.clamp(min=1.0).unsqueeze(-1).to(sums.dtype)
    present = (area > 0).unsqueeze(-1)
    return torch.where(present, codes, neutral.to(codes.dtype).unsqueeze(0))


def _conv(cin: int, cout: int, k: int = 3, sn: bool = False, stride: int = 1,
          padding: int | None = None, padding_mode: str = "replicate") -> nn.Module:
    """A conv padded by replicating the border (no frame; see the module docstring)."""
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if padding is None else padding,
                     padding_mode=padding_mode)
    return spectral_norm(conv) if sn else conv


class StyleEncoder(nn.Module):
    """Image -> full-resolution style features -> per-class codes by region average pooling.

    A small encoder-decoder: the bottleneck sees a neighbourhood of reflectors, the decoder
    brings the features back to every pixel so that thin classes (scruff is a few samples
    thick) still get their own pooled code. The output is linear: a bounded (tanh) output
    saturates, and the pooled codes of different sections then become all alike, which
    leaves nothing to transfer.
    """

    def __init__(self, n_classes: int, style_dim: int, channels: int) -> None:
        super().__init__()
        c = channels
        act = nn.LeakyReLU(LEAK)
        self.down = nn.Sequential(
            _conv(1, c), act, _conv(c, 2 * c, stride=2), act, _conv(2 * c, 4 * c, stride=2), act)
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2), _conv(4 * c, 2 * c), act,
            nn.Upsample(scale_factor=2), _conv(2 * c, style_dim))  # linear: no saturation
        self.neutral = nn.Parameter(torch.zeros(n_classes, style_dim))

    def forward(self, image: Tensor, onehot: Tensor) -> Tensor:
        """(B, 1, H, W) image, (B, K, H, W) one-hot -> (B, K, style_dim) codes."""
        h, w = image.shape[-2:]
        feat = self.up(self.down(pad_to_multiple(image, ENCODER_FACTOR)))[..., :h, :w]
        return region_pool(feat, onehot, self.neutral)


class SeanNorm(nn.Module):
    """Batch norm (no affine) modulated per pixel by class style codes and the label map.

    ``gamma, beta = a * (style branch) + (1 - a) * (label branch)``, ``a`` learned per output
    (sigmoid of a scalar). The style branch projects each class's code through its own linear
    layer, paints the result onto the class's pixels (soft masks at coarse scales) and maps it
    to gamma/beta pixel by pixel (1x1 conv: a code acts only where its class is); the label
    branch is SPADE's 3x3 conv net on the label map. Per-pixel noise, scaled
    per channel (zero at initialisation), is added before normalising.
    """

    def __init__(self, channels: int, n_classes: int, style_dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.noise_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.class_proj = nn.Parameter(torch.randn(n_classes, style_dim, style_dim)
                                       / style_dim ** 0.5)
        self.class_bias = nn.Parameter(torch.zeros(n_classes, style_dim))
        self.style_out = _conv(style_dim, 2 * channels, k=1)  # per pixel: stays in the class
        hidden = max(channels, 16)
        self.label_net = nn.Sequential(_conv(n_classes, hidden), nn.ReLU())
        self.label_out = _conv(hidden, 2 * channels)
        self.blend = nn.Parameter(torch.zeros(2))  # sigmoid -> 0.5 for gamma and beta

    def forward(self, x: Tensor, seg: Tensor, codes: Tensor,
                noise: torch.Generator | None = None) -> Tensor:
        """``seg`` (B, K, h, w) (soft) class masks at x's resolution, ``codes`` (B, K, D)."""
        eps = torch.randn((x.shape[0], 1, *x.shape[2:]), generator=noise, device=x.device,
                          dtype=x.dtype)
        x = self.norm(x + eps * self.noise_scale)
        proj = F.leaky_relu(torch.einsum("bkd,kde->bke", codes, self.class_proj.to(codes.dtype))
                            + self.class_bias.to(codes.dtype), LEAK)
        style_map = torch.einsum("bke,bkhw->behw", proj, seg.to(proj.dtype))
        gamma_s, beta_s = self.style_out(style_map).chunk(2, dim=1)
        gamma_o, beta_o = self.label_out(self.label_net(seg)).chunk(2, dim=1)
        a_g, a_b = torch.sigmoid(self.blend)
        gamma = a_g * gamma_s + (1 - a_g) * gamma_o
        beta = a_b * beta_s + (1 - a_b) * beta_o
        return x * (1 + gamma) + beta


class SeanBlock(nn.Module):
    """Residual block: (SeanNorm, LeakyReLU, conv) x 2, learned shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, n_classes: int, style_dim: int) -> None:
        super().__init__()
        mid = min(cin, cout)
        self.norm0 = SeanNorm(cin, n_classes, style_dim)
        self.conv0 = _conv(cin, mid, sn=True)
        self.norm1 = SeanNorm(mid, n_classes, style_dim)
        self.conv1 = _conv(mid, cout, sn=True)
        self.shortcut = None
        if cin != cout:
            self.norm_s = SeanNorm(cin, n_classes, style_dim)
            self.shortcut = spectral_norm(nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: Tensor, seg: Tensor, codes: Tensor,
                noise: torch.Generator | None = None) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(self.norm_s(x, seg, codes, noise))
        h = self.conv0(F.leaky_relu(self.norm0(x, seg, codes, noise), LEAK))
        h = self.conv1(F.leaky_relu(self.norm1(h, seg, codes, noise), LEAK))
        return skip + h


class Generator(nn.Module):
    """One-hot label map + per-class codes -> single-channel image of the same size.

    Starts from the label map average-pooled by ``2**N_UP`` (soft class fractions, so thin
    classes survive), then one block per scale with x2 nearest upsampling in between.
    """

    def __init__(self, n_classes: int, style_dim: int, channels: int) -> None:
        super().__init__()
        c = channels
        widths = [2 * c, 2 * c, 2 * c, c, c]  # head, then one block per scale, coarse to fine
        self.head = _conv(n_classes, widths[0])
        self.blocks = nn.ModuleList(
            SeanBlock(widths[i], widths[i + 1], n_classes, style_dim) for i in range(N_UP + 1))
        self.out = _conv(widths[-1], 1)

    def forward(self, onehot: Tensor, codes: Tensor,
                noise: torch.Generator | None = None) -> Tensor:
        """(B, K, H, W), (B, K, D) -> (B, 1, H, W). ``noise``: a seeded generator makes the
        injected noise reproducible (a transfer and its reconstruction then share it)."""
        h, w = onehot.shape[-2:]
        seg = pad_to_multiple(onehot, 2 ** N_UP)
        pyramid = [F.avg_pool2d(seg, 2 ** (N_UP - i)) for i in range(N_UP)] + [seg]
        x = self.head(pyramid[0])
        for i, block in enumerate(self.blocks):
            if i:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(x, pyramid[i], codes, noise)
        return self.out(F.leaky_relu(x, LEAK))[..., :h, :w]


class PatchDiscriminator(nn.Module):
    """PatchGAN on (image, one-hot label map); returns its intermediate features and logits."""

    def __init__(self, n_classes: int, channels: int) -> None:
        super().__init__()
        c = channels
        widths = [1 + n_classes, c, 2 * c, 4 * c]
        strides = [2, 2, 1]
        self.layers = nn.ModuleList(
            nn.Sequential(_conv(widths[i], widths[i + 1], k=4, sn=True, stride=strides[i],
                                padding=2, padding_mode="zeros"), nn.LeakyReLU(LEAK))
            for i in range(3))
        self.logits = _conv(widths[-1], 1, k=4, sn=True, padding=2, padding_mode="zeros")

    def forward(self, x: Tensor) -> DOutput:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats + [self.logits(x)]


class MultiScaleDiscriminator(nn.Module):
    """``N_SCALES`` patch discriminators, each on a x2 coarser copy of the input."""

    def __init__(self, n_classes: int, channels: int) -> None:
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(n_classes, channels)
                                    for _ in range(N_SCALES))

    def forward(self, image: Tensor, onehot: Tensor) -> list[DOutput]:
        x = torch.cat([image, onehot.to(image.dtype)], dim=1)
        outs = []
        for i, disc in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(disc(x))
        return outs


# ---------------------------------------------------------------- losses


def d_hinge_loss(real: list[DOutput], fake: list[DOutput]) -> Tensor:
    """Discriminator hinge loss, mean over scales: relu(1 - D(real)) + relu(1 + D(fake))."""
    terms = [F.relu(1 - r[-1].float()).mean() + F.relu(1 + f[-1].float()).mean()
             for r, f in zip(real, fake)]
    return torch.stack(terms).mean()


def g_hinge_loss(fake: list[DOutput]) -> Tensor:
    """Generator hinge loss, mean over scales: -D(fake)."""
    return torch.stack([-f[-1].float().mean() for f in fake]).mean()


def feature_matching_loss(fake: list[DOutput], real: list[DOutput]) -> Tensor:
    """L1 between the discriminator's features of fake and (detached) real images: summed over
    layers, averaged over scales."""
    terms = [F.l1_loss(ff.float(), fr.detach().float())
             for f, r in zip(fake, real) for ff, fr in zip(f[:-1], r[:-1])]
    return torch.stack(terms).sum() / len(fake)


# ---------------------------------------------------------------- the model and its step


@dataclass(frozen=True)
class SeanConfig:
    """What it takes to rebuild the networks (stored in the checkpoint)."""

    n_classes: int
    style_dim: int
    channels: int
    ignore_index: int = 255


class Sean(nn.Module):
    """Encoder, generator and discriminator of the transfer model."""

    def __init__(self, cfg: SeanConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = StyleEncoder(cfg.n_classes, cfg.style_dim, cfg.channels)
        self.generator = Generator(cfg.n_classes, cfg.style_dim, cfg.channels)
        self.discriminator = MultiScaleDiscriminator(cfg.n_classes, cfg.channels)

    def one_hot(self, labels: Tensor) -> Tensor:
        return one_hot(labels, self.cfg.n_classes, self.cfg.ignore_index)

    def codes(self, image: Tensor, labels: Tensor) -> Tensor:
        """(B, H, W) image and labels -> (B, K, D) style codes."""
        return self.encoder(image.unsqueeze(1), self.one_hot(labels))

    def generate(self, labels: Tensor, codes: Tensor,
                 noise: torch.Generator | None = None) -> Tensor:
        """(B, H, W) labels and (B, K, D) codes -> (B, H, W) image."""
        return self.generator(self.one_hot(labels), codes, noise).squeeze(1)

    def generator_parameters(self) -> list[nn.Parameter]:
        """What the generator optimiser trains: encoder and generator."""
        return [*self.encoder.parameters(), *self.generator.parameters()]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator's losses, and the rate of replacing codes by neutral ones."""

    l1: float = 10.0
    fm: float = 10.0
    code_dropout: float = 0.05
    perceptual: float = 0.0  # needs the feature loss (:mod:`falsecli.method.perceptual`)


#: order of the values returned by :func:`train_step`
LOSS_NAMES = ("d", "g_adv", "fm", "l1", "perceptual")

#: a feature loss of (generated, real) images (:class:`falsecli.method.perceptual.FeatureLoss`)
FeatureLossFn = Callable[[Tensor, Tensor], Tensor]


def train_step(model: Sean, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
               image: Tensor, labels: Tensor, weights: LossWeights = LossWeights(),
               amp: bool = False, features: FeatureLossFn | None = None) -> Tensor:
    """One generator step (hinge + feature matching + L1 reconstruction through the encoder's
    own codes, a ``weights.code_dropout`` share of them swapped for the neutral codes, + the
    ``features`` loss when given), then one discriminator step (hinge on real vs the
    detached fake).

    ``amp``: bf16 autocast on the images' device (meant for CUDA). Returns the losses
    (:data:`LOSS_NAMES`; perceptual 0 without ``features``) as one detached tensor on the
    device, so that a training loop reads them back only when it wants to (no host sync per
    step).
    """
    onehot = model.one_hot(labels)
    real = image.unsqueeze(1)
    disc = model.discriminator

    disc.requires_grad_(False)
    with _autocast(image, amp):
        codes = model.encoder(real, onehot)
        drop = torch.rand(codes.shape[:2], device=codes.device) < weights.code_dropout
        codes = torch.where(drop.unsqueeze(-1), model.encoder.neutral.to(codes.dtype), codes)
        fake = model.generator(onehot, codes)
        fake_out = disc(fake, onehot)
        with torch.no_grad():
            real_out = disc(real, onehot)
        g_adv = g_hinge_loss(fake_out)
        fm = feature_matching_loss(fake_out, real_out)
        l1 = F.l1_loss(fake.float(), real)
        perceptual = l1.new_zeros(()) if features is None else features(fake, real).float()
        loss_g = g_adv + weights.fm * fm + weights.l1 * l1 + weights.perceptual * perceptual
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()

    disc.requires_grad_(True)
    with _autocast(image, amp):
        both = disc(torch.cat([real, fake.detach().to(real.dtype)]), torch.cat([onehot, onehot]))
        n = real.shape[0]
        loss_d = d_hinge_loss([[t[:n] for t in s] for s in both],
                              [[t[n:] for t in s] for s in both])
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return torch.stack([loss_d, g_adv, fm, l1, perceptual]).detach()


def _autocast(like: Tensor, enabled: bool) -> torch.autocast:
    return torch.autocast(like.device.type, dtype=torch.bfloat16, enabled=enabled)


def optimizers(model: Sean, lr: float) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for encoder+generator and for the discriminator (betas of GAN practice)."""
    betas = (0.0, 0.9)
    return (torch.optim.Adam(model.generator_parameters(), lr=lr, betas=betas),
            torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=betas))
