"""``train.trace``: every optimiser step split into shares (Pfahler & Morik 2021), checked
against a plain float64 computation (tests/independent.py: one forward and backward per
share, Adam's and SGD's formulas written out), and the decomposition
``W_T·x = W_0·x + Σ_s U_s·x + R·x`` it gives, against the weights themselves."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from independent import traced_shares
from torch import nn

from falsecli.method.tracing import DECAY, ROUNDING, Tracer
from falsecli.method.training import labelled_loss

N_SECTIONS, N_CLASSES, STEPS = 4, 3, 6
LR, DECAY_RATE = 0.01, 0.05


class Tiny(nn.Module):
    """3x3 conv, batch norm (train mode: the batch couples its samples), 1x1 classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.out = nn.Conv2d(4, N_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.bn(self.conv(x))))


class Group:
    """A pool group's stand-in: the tracer only looks it up by identity."""


def batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per step: (images, labels, index) of the 4 sections in a seeded order, some of their
    labels ignored (255)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(N_SECTIONS, 1, 8, 8, generator=gen)
    labels = torch.randint(0, N_CLASSES, (N_SECTIONS, 8, 8), generator=gen)
    labels[torch.rand(labels.shape, generator=gen) < 0.2] = 255
    out = []
    for _ in range(STEPS):
        index = torch.randperm(N_SECTIONS, generator=gen)[:3]
        out.append((images[index], labels[index], index))
    return out


def masks(by: str, steps: list) -> list[list[torch.Tensor]]:
    """The share masks of each step, in the tracer's share order (not the weight decay's)."""
    out = []
    for _, labels, index in steps:
        if by == "section":
            rows = [(index == k)[:, None, None].expand_as(labels) for k in range(N_SECTIONS)]
            out.append(rows + [torch.zeros_like(labels, dtype=torch.bool)])  # no generated
        else:
            out.append([labels == c for c in range(N_CLASSES)])
    return out


def optimizer(kind: str, model: nn.Module) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=LR, weight_decay=DECAY_RATE)
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=DECAY_RATE)


def trace(kind: str, by: str, model: nn.Module, steps: list) -> Tracer:
    """Train ``model`` on ``steps`` as the training loop does, tracing every parameter."""
    opt = optimizer(kind, model)
    tracer = Tracer(model, opt, ["conv", "bn", "out"], [by],
                    sections=[f"s{k}" for k in range(N_SECTIONS)], n_classes=N_CLASSES,
                    ignore_index=255)
    group = Group()
    tracer.group_ids[id(group)] = torch.arange(N_SECTIONS)
    for images, labels, index in steps:
        norm = (labels != 255).sum()
        out = model(images)
        loss = labelled_loss(out, labels, None, 255, norm)
        opt.zero_grad()
        tracer.split(out, labels, None, norm, group, index, slice(0, len(index)))
        loss.backward()
        tracer.step()
    return tracer


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("by", ["section", "class"])
@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_shares_are_the_plain_computation_and_add_up_to_the_change(kind, by) -> None:
    torch.manual_seed(0)
    model = Tiny()
    start = copy.deepcopy(model)
    steps = batches()
    tracer = trace(kind, by, model, steps)
    names = tracer.names
    assert names == [n for n, _ in model.named_parameters()]
    plain = copy.deepcopy(start)
    expect = traced_shares(plain, names, [s[:2] for s in steps], masks(by, steps),
                           kind, LR, DECAY_RATE, momentum=0.9)
    shares = tracer.sets[0]
    assert shares.names[-2:] == [DECAY, ROUNDING]
    assert len(shares.names) == len(expect[names[0]]) + 1
    final, initial = dict(model.named_parameters()), dict(start.named_parameters())
    for n in names:
        # each share, one by one, is the plain computation's (weight decay's too); in fp32
        # the split gradients add up to the whole: next to nothing is left to rounding
        assert relative(shares.total[n][:-1], expect[n]) < 1e-4, n
        assert expect[n][-1].abs().max() > 0 and (expect[n][:-1].abs().amax(
            tuple(range(1, expect[n].dim()))) > 0).sum() >= 2
        # the shares add up to the change of the weights, up to the rounding kept apart
        change = final[n].detach() - initial[n].detach()
        assert relative(shares.total[n][-1] + change, change) < 1e-5, n
        assert relative(shares.total[n].sum(0), change) < 1e-5, n
        assert relative(shares.total[n].sum(0) + shares.residual[n], change) < 1e-6, n
        assert relative(final[n].detach(), dict(plain.named_parameters())[n].detach()) < 1e-5


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_the_representation_decomposes_exactly(kind) -> None:
    """``W_T·x = W_0·x + Σ_s U_s·x`` for the conv layers and batch norm's affine map, with
    ``W_T·x`` from the trained layer itself (bias included), to 1e-4 relative."""
    torch.manual_seed(1)
    model = Tiny()
    start = copy.deepcopy(model)
    tracer = trace(kind, "section", model, batches())
    total = tracer.sets[0].total
    x = torch.randn(2, 4, 5, 5)
    pieces = [F.conv2d(x, w, b) for w, b in zip(total["out.weight"], total["out.bias"])]
    whole = F.conv2d(x, start.out.weight, start.out.bias) + sum(pieces)
    assert relative(whole, model.out(x).detach()) < 1e-4
    z = torch.randn(2, 4, 5, 5)  # batch norm's normalised input: gamma * z + beta
    shares = [g[None, :, None, None] * z + b[None, :, None, None]
              for g, b in zip(total["bn.weight"], total["bn.bias"])]
    start_bn = start.bn.weight[None, :, None, None] * z + start.bn.bias[None, :, None, None]
    trained = model.bn.weight[None, :, None, None] * z + model.bn.bias[None, :, None, None]
    assert relative(start_bn + sum(shares), trained.detach()) < 1e-4


# ---------------------------------------------------------------- in the training stage


class Interrupt(Exception):
    pass


def test_training_records_shares_resumably_without_changing_training(tmp_path) -> None:
    """With train.trace the weights are those of the run without it (bit for bit); the
    shares resume bit for bit; each snapshot's shares add up to W_t − W_0."""
    from conftest import TINY

    from falsecli.core import config
    from falsecli.method.model import MODEL
    from falsecli.method.tracing import load_snapshot, snapshot_epochs
    from falsecli.stages.train import train

    plain = config.resolve(sets=TINY + ["train.epochs=2", "train.weight_decay=0.01"])
    traced = config.merge(plain, {"train": {"trace": {"layers": ["head", "classifier.2"],
                                                      "by": ["section", "class"], "every": 1}}})

    def stop(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(traced, tmp_path / "resumed", on_epoch=stop)
    train(traced, tmp_path / "resumed", resume=True)
    train(traced, tmp_path / "once")
    train(plain, tmp_path / "plain")
    weights = {k: torch.load(tmp_path / k / "train" / MODEL, weights_only=True)["state_dict"]
               for k in ("resumed", "once", "plain")}
    assert all(torch.equal(weights["plain"][n], w) for n, w in weights["once"].items())
    assert snapshot_epochs(tmp_path / "once" / "train") == [1, 2]
    a, b = (load_snapshot(tmp_path / k / "train", 2) for k in ("resumed", "once"))
    assert set(b["final"]) == {"classifier.0.project.0.weight", "classifier.2.weight",
                               "classifier.2.bias", "classifier.4.weight", "classifier.4.bias"}
    for by in ("section", "class"):
        assert a["names"][by] == b["names"][by]
        for n, total in b["shares"][by].items():
            assert torch.equal(a["shares"][by][n], total), (by, n)
            change = b["final"][n] - b["initial"][n]
            assert torch.equal(change, weights["once"][n] - b["initial"][n])
            assert relative(total.sum(0), change) < 1e-4
            assert relative(total.sum(0) + b["residual"][by][n], change) < 1e-4
            # with bf16 autocast (on a CPU with AVX-512 BF16 / AMX) the split backward
            # passes round apart from the whole: a small share, not a residual
            print(f"{by} {n}: rounding share {relative(total[-1] + change, change):.1e}")
    assert b["names"]["section"][-3:] == ["generated_samples", "weight_decay", "rounding"]
    assert len(b["names"]["section"]) == 31 + 3  # every trained section, once
