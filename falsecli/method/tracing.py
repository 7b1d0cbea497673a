"""Recording where every optimiser step came from (Pfahler & Morik 2021): each step of the
traced parameters split exactly into shares, per training section and/or per class of the
training pixels, accumulated over training.

The loss is a sum over pixels over one normaliser, so it splits into shares ``L = Σ_s L_s``
(the pixels of one training section, or of one class) and so does its gradient,
``g = Σ_s g_s``. Weight decay adds ``wd·W`` to ``g`` (torch's Adam and SGD): its own share.
Every first-moment-like state is linear in the gradients, so each share keeps its own:

- Adam: ``m_s ← β1 m_s + (1−β1) g_s``; the second moment ``v`` is the whole gradient's, as
  the optimiser keeps it; ``step_s = −lr · m_s / (1−β1^t) / (√(v/(1−β2^t)) + ε)``.
- SGD with momentum ``μ`` (dampening ``d``): ``b_s ← μ b_s + (1−d) g_s`` (``b_s = g_s`` at
  the first step); ``step_s = −lr · b_s``.

``Σ_s step_s`` is the step taken. The share gradients come from backward passes of their
own; where they do not add up to the step's own gradient (bf16 autocast rounds each pass on
its own), the difference is the share *rounding*, with its moment like any share, so that
training itself is unchanged. What float rounding of the step leaves over (the measured
``W_after − W_before − Σ_s step_s``) is accumulated as the *residual*, so that
``W_T = W_0 + Σ_s U_s + R`` with ``U_s = Σ_t step_s,t``. BatchNorm's affine parameters are
traced like weights; its running statistics are buffers, not a gradient step, and are not
traced. Shares of one set are computed with one backward pass per share, restricted to the
traced parameters (the backward stops at them), before the training step's own backward, which
tracing leaves unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from falsecli.core import checkpoint, distributed
from falsecli.core.distributed import Ranks
from falsecli.core.errors import FalseCliError

#: the shares of a run (``train.trace``): ``shares/epoch_0005.pt`` ..., written by
#: :func:`save_snapshot`, listed by :func:`snapshot_epochs`, read by :func:`load_snapshot`
SHARES = "shares"
SHARES_FILE = "epoch_{:04d}.pt"
#: the layers of ``train.trace.layers: [head]``: the ASPP projection and the classifier conv
HEAD = ("classifier.0.project.0", "classifier.4")
#: the share of weight decay; of the samples of ``extra_samples`` (no section of their own);
#: and of the gradient's rounding: the step's own gradient minus the shares' (bf16 autocast
#: rounds each backward pass on its own; in fp32 it is ~1e-7 of the gradient)
DECAY, GENERATED, ROUNDING = "weight_decay", "generated_samples", "rounding"
#: what a snapshot file holds
SNAPSHOT_KEYS = ("epoch", "initial", "final", "shares", "residual", "names", "layers")


def traced_parameters(model: torch.nn.Module, layers: Sequence[str]) -> list[str]:
    """The parameters of ``layers`` (module names or prefixes; ``head`` = :data:`HEAD`,
    ``all`` = every parameter)."""
    aliases = {"head": HEAD, "all": ("",)}
    prefixes = [p for layer in layers for p in aliases.get(layer, (layer,))]
    names = [n for n, _ in model.named_parameters()
             if any(p == "" or n.startswith(p + ".") or n == p for p in prefixes)]
    if not names:
        raise FalseCliError(f"config key 'train.trace.layers' is {list(layers)}; it selects no "
                            "parameter — use head, all or module names such as "
                            "classifier.4, backbone.layer4")
    return names


@dataclass
class ShareSet:
    """One split of the steps: ``names`` of its shares (the last two: weight decay and
    rounding), per traced
    parameter the shares' optimiser moments ``moment`` and accumulated steps ``total``
    (each (shares, *parameter shape)), and the ``residual`` of rounding (parameter shape)."""

    by: str
    names: list[str]
    moment: dict[str, torch.Tensor]
    total: dict[str, torch.Tensor]
    residual: dict[str, torch.Tensor]


class Tracer:
    """The shares of one run's traced parameters, kept on the training device.

    Per training step: :meth:`split` (after the forward, before the backward) computes each
    share's gradient; :meth:`step` runs the optimiser and splits its step. ``group_ids``
    (filled by :func:`from_config`): per pool group, the section share of each sample.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 layers: Sequence[str], by: Sequence[str], *, sections: Sequence[str],
                 n_classes: int, ignore_index: int, ranks: Ranks = distributed.SINGLE) -> None:
        params = dict(model.named_parameters())
        self.names = traced_parameters(model, layers)
        self.params = [params[n] for n in self.names]
        self.optimizer, self.ranks, self.ignore = optimizer, ranks, ignore_index
        self.n_classes, self.layers, self.steps = n_classes, list(layers), 0
        shares = {"section": [*sections, GENERATED], "class": [f"class_{c}" for c in
                                                                range(n_classes)]}
        self.sets = [ShareSet(b, [*shares[b], DECAY, ROUNDING],
                              *({n: torch.zeros((len(shares[b]) + 2, *p.shape), device=p.device)
                                 for n, p in zip(self.names, self.params)} for _ in range(2)),
                              {n: torch.zeros_like(p) for n, p in zip(self.names, self.params)})
                     for b in by]
        self.initial = {n: p.detach().clone() for n, p in zip(self.names, self.params)}
        self._grads: list[tuple[torch.Tensor, list[torch.Tensor]]] = []
        #: per pool group (by ``id``), the section share of each of its samples
        self.group_ids: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------ per step

    def split(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
              norm: torch.Tensor, group: Any, index: torch.Tensor, mine: slice) -> None:
        """Each share's gradient of this process's loss (``logits`` of its ``labels``: the
        rows ``mine`` of the global batch, samples ``index`` of the pool's ``group``), summed
        over the processes. Every process runs the same backward passes (batch norm over the
        global batch communicates in them)."""
        ids = self.group_ids[id(group)]
        ids = ids[index.to(ids.device)]
        pixels = F.cross_entropy(logits.float(), labels.long(), weight=weights,
                                 ignore_index=self.ignore, reduction="none")
        scale = 1 / norm.clamp_min(1e-12)
        self._grads = []
        for s in self.sets:
            if s.by == "section":
                parts = [pixels[j - mine.start].sum() if mine.start <= j < mine.stop
                         else pixels.sum() * 0 for j in range(len(ids))]
                index = ids
            else:
                parts = [torch.where(labels == c, pixels, 0).sum() for c in range(self.n_classes)]
                index = torch.arange(self.n_classes, device=ids.device)
            grads = [torch.stack(g) for g in zip(*(torch.autograd.grad(
                part * scale, self.params, retain_graph=True) for part in parts))]
            for g in grads:
                distributed.all_sum(self.ranks, g)
            self._grads.append((index, grads))

    def step(self) -> None:
        """The optimiser's step, split into the shares of :meth:`split`'s gradients."""
        before = [p.detach().clone() for p in self.params]
        whole = [p.grad.detach().clone() for p in self.params]
        self.optimizer.step()
        self.steps += 1
        group = self.optimizer.param_groups[0]
        for k, (name, p) in enumerate(zip(self.names, self.params)):
            rate, denom, keep, gain = self._rule(group, p)
            taken = p.detach() - before[k]
            for s, (index, grads) in zip(self.sets, self._grads):
                m = s.moment[name]
                m.mul_(keep)
                m.index_add_(0, index, grads[k].to(m.dtype), alpha=gain)
                m[-2].add_(before[k], alpha=gain * group["weight_decay"])
                m[-1].add_(whole[k] - grads[k].sum(0), alpha=gain)
                if isinstance(denom, float):
                    s.total[name].add_(m, alpha=rate / denom)
                else:  # in place: no temporary of the shares' size
                    s.total[name].addcdiv_(m, denom, value=rate)
                s.residual[name].add_(taken - m.sum(0) * rate / denom)
        self._grads = []

    def _rule(self, group: dict[str, Any], p: torch.Tensor
              ) -> tuple[float, torch.Tensor | float, float, float]:
        """(step factor, divisor, moment decay, gradient gain) of the optimiser's update
        ``step = factor · moment / divisor`` with ``moment ← decay·moment + gain·g``."""
        if isinstance(self.optimizer, torch.optim.Adam):
            if group["amsgrad"] or group["maximize"]:
                raise FalseCliError("tracing supports Adam without amsgrad and maximize")
            beta1, beta2 = group["betas"]
            v = self.optimizer.state[p]["exp_avg_sq"]
            denom = v.sqrt() / (1 - beta2 ** self.steps) ** 0.5 + group["eps"]
            return -group["lr"] / (1 - beta1 ** self.steps), denom, beta1, 1 - beta1
        if isinstance(self.optimizer, torch.optim.SGD) and not group["nesterov"]:
            mu = group["momentum"]
            first = self.steps == 1 or mu == 0
            return -group["lr"], 1.0, 0.0 if first else mu, 1.0 if first else 1 - group[
                "dampening"]
        raise FalseCliError(f"tracing supports Adam and SGD, not {type(self.optimizer).__name__}")

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run continues from (part of the training checkpoint)."""
        return {"steps": self.steps, "initial": self.initial,
                **{key: {s.by: getattr(s, key) for s in self.sets}
                   for key in ("moment", "total", "residual")}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        for name in self.names:
            self.initial[name].copy_(state["initial"][name])
            for s in self.sets:
                for key in ("moment", "total", "residual"):
                    getattr(s, key)[name].copy_(state[key][s.by][name])

    def snapshot(self, epoch: int) -> dict[str, Any]:
        """What :func:`save_snapshot` writes after ``epoch``: the initial and current weights,
        each set's accumulated shares and names, the residual."""
        return {"epoch": epoch, "initial": self.initial, "layers": self.layers,
                "final": {n: p.detach() for n, p in zip(self.names, self.params)},
                "shares": {s.by: s.total for s in self.sets},
                "names": {s.by: s.names for s in self.sets},
                "residual": {s.by: s.residual for s in self.sets}}


def from_config(tc: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                pool: Any, n_classes: int, ignore_index: int, ranks: Ranks) -> Tracer | None:
    """The tracer of ``train.trace`` for the samples of ``pool`` (None when off)."""
    spec = tc["trace"]
    if spec is None:
        return None
    if tc["compile"]:
        raise FalseCliError("config key 'train.compile' is true, but train.trace needs it "
                            "false (its per-share backward passes reuse the graph); set "
                            "train.compile=false")
    names = [s.name for g in pool.groups for s in g.sections]
    tracer = Tracer(model, optimizer, spec["layers"], spec["by"], sections=names,
                    n_classes=n_classes, ignore_index=ignore_index, ranks=ranks)
    position = {name: i for i, name in enumerate(names)}
    for g in pool.groups:
        ids = [position[s.name] for s in g.sections]
        ids += [len(names)] * (len(g.images) - len(ids))  # generated samples: one share
        tracer.group_ids[id(g)] = torch.tensor(ids, device=g.images.device)
    return tracer


# ---------------------------------------------------------------- the files


def snapshot_path(run: Path, epoch: int) -> Path:
    return Path(run) / SHARES / SHARES_FILE.format(epoch)


def save_snapshot(run: Path, tracer: Tracer, epoch: int) -> Path:
    """Write the shares accumulated up to ``epoch`` (host copies); returns the file."""
    path = snapshot_path(run, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(path, checkpoint.host_copy(tracer.snapshot(epoch)))
    return path


def snapshot_epochs(run: Path) -> list[int]:
    """The epochs after which the run in folder ``run`` wrote its shares, in order."""
    folder = Path(run) / SHARES
    if not folder.is_dir():
        return []
    return sorted(int(p.stem.split("_")[1]) for p in folder.glob("epoch_*.pt"))


def load_snapshot(run: Path, epoch: int) -> dict[str, Any]:
    """A snapshot of :meth:`Tracer.snapshot`."""
    return checkpoint.load(snapshot_path(run, epoch), "shares file",
                           "train the run again with 'falsecli train --force'",
                           keys=SNAPSHOT_KEYS)
