"""TracIn influence of training sections on a region of a tracked section (Pruthi et al. 2020).

The influence of training section ``z`` on the loss ``L_Q`` over a query region ``Q`` (some
pixels of one tracked section) is, over the kept checkpoints ``t`` of a run,

    score(z) = sum_t  lr_t * < grad L(z; theta_t), grad L_Q(theta_t) >

with the gradients restricted to the chosen parameters. ``L(z)`` is the mean cross-entropy
over z's labelled pixels (a batch of one, as training normalises it); ``L_Q`` the mean over
Q's labelled pixels (``normalize="cosine"``: each term over ``|grad L(z)| |grad L_Q|``, the
renormalised TracIn of Hammoudeh & Lowd). Positive: a gradient step on z lowers the loss on Q
(a proponent);
negative: it raises it (an opponent). Networks are in eval mode (BatchNorm uses its running
statistics, no batch coupling), so a section's score does not depend on its batch mates.

Per pixel. ``L(z)`` is a sum over z's pixels, so ``<grad L(z), g>`` is a sum of per-pixel
terms. All of them come from one forward-mode pass (a Jacobian-vector product of the
per-pixel loss map along ``g = grad L_Q``), instead of one backward pass per pixel group:
summed over the pixels of each class they give per-class scores that add up to the section's
score exactly (one normalisation, ``1 / labelled pixels of z``, for every class); kept per
checkpoint they say when the influence happened; kept as a map they say where in z it came
from.

Why not Captum's ``TracInCP``: it scores one scalar loss per training example, from
explicitly computed and stored per-example gradients. Per-class scores would need one
pseudo-example per (section, class), i.e. one backward pass and one stored gradient per
class present, and it has no per-pixel maps; its data loader also batches examples of one
shape, while inlines and crosslines differ. The region-restricted query loss alone would fit
(its ``test_loss_fn``), so the definition is the same; the computation here is one JVP per
(checkpoint, batch of sections).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp

from falsecli.core.errors import FalseCliError
from falsecli.data.dataset import Dataset, Section
from falsecli.method.pool import by_shape

#: named parameter sets of ``--layers``: ``last`` = the layers after ASPP (3x3 conv, its
#: BatchNorm, the 1x1 classifier); ``head`` = ASPP too; ``all`` = every parameter
LAYER_SETS: dict[str, tuple[str, ...]] = {
    "last": ("classifier.1", "classifier.2", "classifier.4"),
    "head": ("classifier",),
    "all": ("",),
}


@dataclass(frozen=True)
class Checkpoint:
    """Kept weights after ``epoch``, reached with learning rate ``lr``."""

    epoch: int
    lr: float
    state_dict: dict[str, torch.Tensor]


@dataclass(frozen=True)
class Query:
    """The explained pixels: ``region`` (bool, depth x width) of a section's normalised
    ``image`` with its ``labels``; ignored labels in the region do not count."""

    image: np.ndarray
    labels: np.ndarray
    region: np.ndarray


def parameter_names(model: torch.nn.Module, layers: str) -> list[str]:
    """Names of the parameters ``layers`` selects: a :data:`LAYER_SETS` name or
    comma-separated prefixes of parameter names (``backbone.layer4,classifier``)."""
    prefixes = LAYER_SETS.get(layers) or tuple(p for p in layers.split(",") if p)
    names = [n for n, _ in model.named_parameters()
             if any(p == "" or n == p or n.startswith(p + ".") for p in prefixes)]
    if not names:
        tops = sorted({n.rsplit(".", 2)[0] for n, _ in model.named_parameters()})
        raise FalseCliError(f"config key 'trace.layers' is {layers!r}; it selects no parameter — "
                            f"use {' | '.join(LAYER_SETS)} or prefixes of: {', '.join(tops)}")
    return names


def _pixel_losses(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int
                  ) -> torch.Tensor:
    """Per-pixel cross-entropy (N, H, W), 0 at ignored pixels."""
    return F.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_index,
                           reduction="none")


def region_gradient(model: torch.nn.Module, names: Sequence[str], query: Query,
                    ignore_index: int) -> dict[str, torch.Tensor]:
    """``grad L_Q`` over the parameters ``names`` (the model in eval mode)."""
    device = next(model.parameters()).device
    labels = torch.from_numpy(query.labels).to(device)
    use = torch.from_numpy(query.region).to(device) & (labels != ignore_index)
    if not bool(use.any()):
        raise FalseCliError("the query region holds no labelled pixel — choose another class, "
                            "mask or section")
    params = dict(model.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in names)
    x = torch.from_numpy(query.image).to(device)[None, None]
    losses = _pixel_losses(model(x), labels[None], ignore_index)[0]
    loss = losses[use].sum() / use.sum()
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    for p in params.values():
        p.requires_grad_(False)
    return dict(zip(names, grads))


def pixel_influence(model: torch.nn.Module, tangent: dict[str, torch.Tensor],
                    images: torch.Tensor, labels: torch.Tensor, ignore_index: int
                    ) -> torch.Tensor:
    """(N, H, W): the terms of ``<grad L(z_n), tangent>`` per pixel of each section ``z_n``
    (their sum over a section is its dot product), from one forward-mode pass.

    ``L(z_n)`` is the mean loss over ``z_n``'s labelled pixels; ignored pixels give 0.
    """
    primals = {n: p.detach() for n, p in model.named_parameters() if n in tangent}
    x = images[:, None]

    def losses(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return _pixel_losses(functional_call(model, params, (x,)), labels, ignore_index)

    _, dloss = jvp(losses, (primals,), ({n: tangent[n] for n in primals},))
    valid = labels != ignore_index
    count = valid.flatten(1).sum(1).clamp_min(1)
    return torch.where(valid, dloss, 0.0) / count[:, None, None]


def gradient_norms(model: torch.nn.Module, names: Sequence[str], images: torch.Tensor,
                   labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """(N,): ``|grad L(z_n)|`` over the parameters ``names``, one backward pass per
    section (eval mode: a section's gradient does not depend on its batch mates)."""
    params = dict(model.named_parameters())
    chosen = [params[n] for n in names]
    for p in chosen:
        p.requires_grad_(True)
    out = []
    for image, lab in zip(images, labels):
        valid = (lab != ignore_index).sum().clamp_min(1)
        loss = _pixel_losses(model(image[None, None]), lab[None], ignore_index).sum() / valid
        grads = torch.autograd.grad(loss, chosen)
        out.append(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    for p in chosen:
        p.requires_grad_(False)
    return torch.stack(out)


def class_sums(maps: torch.Tensor, labels: torch.Tensor, n_classes: int,
                ignore_index: int) -> torch.Tensor:
    """(N, C) float64: each section's pixel terms summed per class of the pixel."""
    lab = labels.long().flatten(1)
    lab = torch.where(lab == ignore_index, 0, lab)  # their terms are 0
    out = torch.zeros(maps.shape[0], n_classes, dtype=torch.float64, device=maps.device)
    return out.scatter_add_(1, lab, maps.flatten(1).double())


def _terms(model: torch.nn.Module, checkpoints: Sequence[Checkpoint], names: Sequence[str],
           query: Query, ds: Dataset, sections: Sequence[Section], batch_size: int,
           advance: Callable[[], None], normalize: str = "none"
           ) -> Iterator[tuple[int, list[int], torch.Tensor, torch.Tensor]]:
    """Per checkpoint k and batch of same-shape sections (their indices in ``sections``):
    ``lr_k`` x the pixel terms (N, H, W), and the batch's labels. ``normalize="cosine"``
    divides each section's terms by ``|grad L(z)| |grad L_Q|`` at that checkpoint."""
    device = next(model.parameters()).device
    position = {s: i for i, s in enumerate(sections)}
    batches = [group[i:i + batch_size] for group in by_shape(sections).values()
               for i in range(0, len(group), batch_size)]
    for k, ckpt in enumerate(checkpoints):
        model.load_state_dict(ckpt.state_dict)
        model.eval()
        tangent = region_gradient(model, names, query, ds.ignore_index)
        q_norm = torch.sqrt(sum((g.double() ** 2).sum() for g in tangent.values()))
        for batch in batches:
            images, labels = (torch.from_numpy(a).to(device) for a in ds.stack(batch))
            maps = pixel_influence(model, tangent, images, labels, ds.ignore_index)
            if normalize == "cosine":
                norms = gradient_norms(model, names, images, labels, ds.ignore_index) * q_norm
                maps = maps / norms.clamp_min(1e-30).to(maps.dtype)[:, None, None]
            yield k, [position[s] for s in batch], ckpt.lr * maps, labels
            advance()


def class_scores(model: torch.nn.Module, checkpoints: Sequence[Checkpoint],
                 names: Sequence[str], query: Query, ds: Dataset,
                 sections: Sequence[Section], batch_size: int = 8,
                 advance: Callable[[], None] = lambda: None, normalize: str = "none"
                 ) -> np.ndarray:
    """(sections, checkpoints, classes) float64: ``lr_t <grad L_c(z), grad L_Q>`` where
    ``L_c(z)`` is z's loss summed over its class-c pixels over all its labelled pixels
    (so the classes add up to the section's score). ``advance()`` runs after each batch."""
    n_classes = len(ds.classes)
    out = np.zeros((len(sections), len(checkpoints), n_classes))
    for k, index, maps, labels in _terms(model, checkpoints, names, query, ds, sections,
                                         batch_size, advance, normalize):
        out[index, k] = class_sums(maps, labels, n_classes, ds.ignore_index).cpu().numpy()
    return out


def influence_maps(model: torch.nn.Module, checkpoints: Sequence[Checkpoint],
                   names: Sequence[str], query: Query, ds: Dataset,
                   sections: Sequence[Section], batch_size: int = 8,
                   normalize: str = "none") -> list[np.ndarray]:
    """Per section, its pixel terms summed over the checkpoints (depth x width, float32):
    where in the training section its score comes from (the map sums to the score)."""
    out = [np.zeros(s.shape, np.float32) for s in sections]
    for _, index, maps, _ in _terms(model, checkpoints, names, query, ds, sections,
                                    batch_size, lambda: None, normalize):
        for i, m in zip(index, maps.cpu().numpy()):
            out[i] += m
    return out
