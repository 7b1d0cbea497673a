"""The SEAN-style networks and losses: hand-computed pieces, shapes, gradients, and that a
class's style code drives that class's pixels (a toy task the model must learn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from falsecli.method import sean
from falsecli.method.model import build_model
from falsecli.method.perceptual import FeatureLoss
from falsecli.method.sean import LossWeights, Sean, SeanConfig

K, D, C = 4, 6, 8


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _labels(b: int, h: int, w: int, absent: int | None = None) -> torch.Tensor:
    """Random labels with every class present except ``absent``."""
    classes = [k for k in range(K) if k != absent]
    lab = torch.tensor(classes)[torch.randint(0, len(classes), (b, h, w))]
    lab[:, 0, : len(classes)] = torch.tensor(classes)
    return lab


def test_one_hot_zeroes_ignored_pixels() -> None:
    labels = torch.tensor([[[0, 2], [255, 1]]])
    out = sean.one_hot(labels, 3, 255)
    expected = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 1]], [[0, 1], [0, 0]]]).float()
    assert out.shape == (1, 3, 2, 2)
    assert torch.equal(out[0], expected)


def test_pad_to_multiple_replicates_the_border() -> None:
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    out = sean.pad_to_multiple(x, 4)
    assert out.shape == (1, 1, 4, 4)
    assert torch.equal(out[0, 0, :2, :3], x[0, 0])
    assert torch.equal(out[0, 0, :, 3], torch.tensor([2.0, 5.0, 5.0, 5.0]))
    assert sean.pad_to_multiple(x, 1) is x


def test_region_pool_averages_each_class_and_uses_neutral_for_absent() -> None:
    # features: 2 channels on a 2 x 3 image; labels [[0, 0, 1], [0, 2, 255]], class 3 absent
    feat = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
                         [[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]]])[None]
    onehot = sean.one_hot(torch.tensor([[[0, 0, 1], [0, 2, 255]]]), K, 255)
    neutral = torch.full((K, 2), -7.0)
    codes = sean.region_pool(feat, onehot, neutral)
    expected = torch.tensor([[(1 + 2 + 4) / 3, (10 + 20 + 40) / 3], [3.0, 30.0], [5.0, 50.0],
                             [-7.0, -7.0]])
    assert torch.allclose(codes[0], expected)


@pytest.mark.parametrize("shape", [(2, 13, 17), (1, 8, 16), (3, 5, 7)])
def test_shapes_any_size(shape: tuple[int, int, int]) -> None:
    model = Sean(SeanConfig(K, D, C))
    image, labels = torch.randn(shape), _labels(*shape)
    labels[0, -1, -1] = 255
    codes = model.codes(image, labels)
    assert codes.shape == (shape[0], K, D)
    out = model.generate(labels, codes)
    assert out.shape == shape and torch.isfinite(out).all()
    scales = model.discriminator(out.unsqueeze(1), model.one_hot(labels))
    assert len(scales) == sean.N_SCALES
    for i, feats in enumerate(scales):
        logits = feats[-1]
        assert len(feats) == 4 and logits.shape[:2] == (shape[0], 1)
        # patches cover the (downscaled) image: never empty, however small the input
        assert logits.shape[2] >= shape[1] // 2 ** (i + 2) and logits.shape[3] >= 1


def test_gradients_reach_every_module_and_respect_class_regions() -> None:
    model = Sean(SeanConfig(K, D, C))
    absent = 3
    image, labels = torch.randn(2, 13, 17), _labels(2, 13, 17, absent=absent)
    onehot = model.one_hot(labels)
    out = model.generator(onehot, model.encoder(image.unsqueeze(1), onehot))
    scales = model.discriminator(out, onehot)
    loss = sum(f[-1].mean() for f in scales) + out.square().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for module in model.modules():
        if isinstance(module, sean.SeanNorm):
            # the absent class's projection gets nothing: its code paints no pixel
            assert module.class_proj.grad[absent].abs().sum() == 0
            assert module.class_proj.grad[:absent].abs().sum() > 0
            for p in (module.noise_scale, module.blend, module.style_out.weight,
                      module.label_out.weight):
                assert p.grad.abs().sum() > 0
    # present classes use their pooled codes, the absent one paints nothing
    assert model.encoder.neutral.grad.abs().sum() == 0
    for p in [*model.encoder.down.parameters(), *model.discriminator.parameters()]:
        assert p.grad.abs().sum() > 0


def test_hinge_and_feature_matching_losses_by_hand() -> None:
    real = [[torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.5])],
            [torch.tensor([0.0]), torch.tensor([-1.0, 1.0])]]
    fake = [[torch.tensor([1.0, 1.0]), torch.tensor([-2.0, 0.0])],
            [torch.tensor([2.0]), torch.tensor([0.5, -0.5])]]
    # scale 0: real relu(1-2)=0, relu(1-.5)=.5 -> .25; fake relu(1-2)=0, relu(1+0)=1 -> .5
    # scale 1: real relu(2)=2, relu(0)=0 -> 1; fake relu(1.5)=1.5, relu(.5)=.5 -> 1
    assert sean.d_hinge_loss(real, fake).item() == pytest.approx((0.75 + 2.0) / 2)
    assert sean.g_hinge_loss(fake).item() == pytest.approx((1.0 + 0.0) / 2)
    # features: scale 0 mean |[0, 2]| = 1, scale 1 mean |[2]| = 2 -> (1 + 2) / 2
    assert sean.feature_matching_loss(fake, real).item() == pytest.approx(1.5)


def test_train_step_updates_both_players_and_returns_finite_losses() -> None:
    model = Sean(SeanConfig(K, D, C))
    opt_g, opt_d = sean.optimizers(model, 1e-3)
    before_g = [p.detach().clone() for p in model.generator.parameters()]
    before_d = [p.detach().clone() for p in model.discriminator.parameters()]
    losses = sean.train_step(model, opt_g, opt_d, torch.randn(2, 16, 12), _labels(2, 16, 12))
    assert losses.shape == (len(sean.LOSS_NAMES),) and torch.isfinite(losses).all()
    assert not losses.requires_grad
    assert any(not torch.equal(a, b) for a, b in zip(before_g, model.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, model.discriminator.parameters()))


def _feature_loss() -> FeatureLoss:
    """The feature loss of a (random) segmentation network's backbone, in training mode as a
    network in training would be: the loss must put it in eval mode and keep it there."""
    net = build_model({"output_stride": 8, "aspp_channels": 8}, K).train()
    return FeatureLoss(net.backbone)


def test_perceptual_loss_is_zero_for_identical_images_and_positive_otherwise() -> None:
    loss = _feature_loss()
    x = torch.randn(2, 1, 24, 16)
    assert loss(x, x.clone()).item() == 0.0
    fake = (x + 0.3 * torch.randn_like(x)).requires_grad_(True)
    value = loss(fake, x)
    assert value.item() > 0
    value.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0  # it trains the generator
    assert all(not m.training for m in loss.modules())
    loss.train()
    assert all(not m.training for m in loss.modules())


def test_train_step_with_perceptual_loss_trains_the_generator_not_the_backbone() -> None:
    """The backbone gets no gradient and stays unchanged (weights and batch-norm statistics);
    its loss is reported and changes the generator's update."""
    features = _feature_loss()
    frozen = {k: v.clone() for k, v in features.state_dict().items()}
    image, labels = torch.randn(2, 16, 12), _labels(2, 16, 12)
    after = []
    for weight in (0.0, 10.0):
        torch.manual_seed(1)
        model = Sean(SeanConfig(K, D, C))
        opt_g, opt_d = sean.optimizers(model, 1e-3)
        losses = sean.train_step(model, opt_g, opt_d, image, labels,
                                 LossWeights(perceptual=weight), features=features)
        assert losses[sean.LOSS_NAMES.index("perceptual")] > 0
        after.append([p.detach().clone() for p in model.generator.parameters()])
    assert all(p.grad is None for p in features.parameters())
    for key, value in features.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert any(not torch.equal(a, b) for a, b in zip(*after))


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_code_dropout_trains_the_neutral_codes(rate: float) -> None:
    model = Sean(SeanConfig(K, D, C))
    opt_g, opt_d = sean.optimizers(model, 1e-2)
    before = model.encoder.neutral.detach().clone()
    sean.train_step(model, opt_g, opt_d, torch.randn(2, 8, 8), _labels(2, 8, 8),
                    LossWeights(code_dropout=rate))
    changed = (model.encoder.neutral != before).any(dim=1)
    assert changed.all() if rate else not changed.any()


def test_seeded_noise_is_reproducible() -> None:
    model = Sean(SeanConfig(K, D, C)).eval()
    for m in model.modules():
        if isinstance(m, sean.SeanNorm):
            m.noise_scale.data.fill_(1.0)
    labels = _labels(1, 16, 16)
    codes = model.codes(torch.randn(1, 16, 16), labels)

    def gen(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return model.generate(labels, codes, g)

    assert torch.equal(gen(1), gen(1))
    assert not torch.allclose(gen(1), gen(2))


def _toy_batch(rng: np.random.Generator, n: int, size: int = 16
               ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Three horizontal bands; each band's image is its own random level (its 'style') plus a
    little noise. The level of a band is knowable only from the image: the codes must carry it."""
    labels = np.zeros((n, size, size), np.int64)
    levels = rng.uniform(-1.5, 1.5, (n, 3))
    images = rng.normal(0, 0.05, (n, size, size))
    for i in range(n):
        a, b = rng.integers(3, 7), rng.integers(9, 13)
        labels[i, a:b], labels[i, b:] = 1, 2
        images[i] += levels[i][labels[i]]
    return torch.tensor(images, dtype=torch.float32), torch.tensor(labels), levels


def test_replacing_a_class_code_changes_that_class_towards_the_source() -> None:
    torch.manual_seed(1)
    rng = np.random.default_rng(0)
    model = Sean(SeanConfig(3, 8, 16))
    opt_g, opt_d = sean.optimizers(model, 1e-3)
    for _ in range(150):
        image, labels, _ = _toy_batch(rng, 8)
        sean.train_step(model, opt_g, opt_d, image, labels, LossWeights(l1=10.0, fm=1.0))
    model.eval()
    image, labels, levels = _toy_batch(np.random.default_rng(99), 16)
    with torch.no_grad():
        codes = model.codes(image, labels)
        recon = model.generate(labels, codes, torch.Generator().manual_seed(0))
        swapped = codes.clone()
        swapped[:, 1] = codes.roll(1, dims=0)[:, 1]  # class 1's style from the previous image
        trans = model.generate(labels, swapped, torch.Generator().manual_seed(0))
    inside = labels == 1
    change = (trans - recon).abs()
    ratio = change[inside].mean() / change[~inside].mean()
    assert ratio > 3.0, ratio
    # and the change goes the right way: class 1 takes the source's level
    src_level = torch.tensor(np.roll(levels, 1, axis=0)[:, 1], dtype=torch.float32)
    tgt_level = torch.tensor(levels[:, 1], dtype=torch.float32)
    mean_in = torch.stack([trans[i][inside[i]].mean() for i in range(len(trans))])
    closer = (mean_in - src_level).abs() < (mean_in - tgt_level).abs()
    far = (src_level - tgt_level).abs() > 0.5  # pairs whose styles differ visibly
    assert closer[far].float().mean() > 0.8
    # the reconstruction itself learned the levels (the codes carry the style)
    rec_in = torch.stack([recon[i][inside[i]].mean() for i in range(len(recon))])
    assert (rec_in - tgt_level).abs().mean() < 0.35


def test_a_uniform_section_stays_uniform_no_frame() -> None:
    """One class everywhere with one code: every pixel sees the same input, so the generated
    image and the encoder's features must be constant up to the border. Zero padding shows
    the networks a dark frame and paints it a few pixels inside the edges (the frame of the
    demo's transfers); replicated borders do not."""
    model = Sean(SeanConfig(K, D, C)).eval()
    for name, param in model.named_parameters():  # trained-looking: no bias happens to be 0
        if "noise_scale" not in name:  # per-pixel noise would make any image non-uniform
            torch.nn.init.normal_(param, std=0.1)
    labels = torch.full((1, 21, 27), 2)
    with torch.no_grad():
        codes = model.codes(torch.full((1, 21, 27), 0.7), labels)
        out = model.generate(labels, codes)
        feat = model.encoder.up(model.encoder.down(torch.full((1, 1, 24, 28), 0.7)))
    assert out.abs().max() > 1e-3
    assert torch.allclose(out, out[0, 10, 13].expand_as(out), atol=1e-5, rtol=1e-5)
    assert torch.allclose(feat, feat[..., 12:13, 14:15].expand_as(feat), atol=1e-5, rtol=1e-5)
