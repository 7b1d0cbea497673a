"""The dilated DeepLabv3/ResNet-18: output sizes, strides, dilations, loading."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch import nn

from falsecli.core.errors import FalseCliError
from falsecli.method.model import build_model, load_model

SMALL = {"output_stride": 8, "aspp_channels": 16}


@pytest.mark.parametrize("stride, hw", [(8, (32, 24)), (8, (33, 17)), (16, (33, 17)),
                                        (16, (41, 50))])
def test_logits_at_input_resolution(stride: int, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model({"output_stride": stride, "aspp_channels": 16}, 6).train()
    x = torch.randn(2, 1, *hw)
    logits = model(x)
    assert logits.shape == (2, 6, *hw)
    logits.mean().backward()  # trainable end to end at batch 2
    features = model.backbone(x)
    assert features.shape == (2, 512, math.ceil(hw[0] / stride), math.ceil(hw[1] / stride))


def test_f3_sized_section_in_eval_mode() -> None:
    model = build_model(SMALL, 6).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 255, 701)).shape == (1, 6, 255, 701)


@pytest.mark.parametrize("stride, dilations", [
    (16, {"layer3": (1, 1), "layer4": (1, 2)}),
    (8, {"layer3": (1, 2), "layer4": (2, 4)}),
])
def test_strides_become_dilations(stride: int, dilations: dict) -> None:
    model = build_model({"output_stride": stride, "aspp_channels": 16}, 6)
    bb = model.backbone
    assert bb.conv1.in_channels == 1
    for name in ("layer3", "layer4"):
        layer = getattr(bb, name)
        dilated = dilations[name] != (1, 1)
        assert layer[0].conv1.stride == ((1, 1) if dilated else (2, 2))
        assert layer[0].downsample[0].stride == ((1, 1) if dilated else (2, 2))
        for block, d in zip(layer, dilations[name]):
            for conv in (block.conv1, block.conv2):
                assert conv.dilation == (d, d) and conv.padding == (d, d)
    aspp_rates = [m[0].dilation[0] for m in model.classifier[0].convs[1:4]]
    assert aspp_rates == ([12, 24, 36] if stride == 8 else [6, 12, 18])
    assert model.classifier[-1].out_channels == 6
    assert model.classifier[0].project[0].out_channels == 16


def test_random_initialisation_depends_on_seed() -> None:
    torch.manual_seed(0)
    a = build_model(SMALL, 6).backbone.conv1.weight
    torch.manual_seed(1)
    b = build_model(SMALL, 6).backbone.conv1.weight
    assert not torch.equal(a, b)


def test_bad_stride_or_width_is_a_user_error() -> None:
    with pytest.raises(FalseCliError, match="model.output_stride"):
        build_model({"output_stride": 32, "aspp_channels": 16}, 6)
    with pytest.raises(FalseCliError, match="'model.aspp_channels' is 0"):
        build_model({"output_stride": 8, "aspp_channels": 0}, 6)


def test_load_model_round_trip(tmp_path) -> None:
    model = build_model(SMALL, 4).eval()
    payload = {"state_dict": model.state_dict(), "config": {"model": SMALL},
               "classes": ["a", "b", "c", "d"], "norm": {"mean": 0.0, "std": 1.0}}
    torch.save(payload, tmp_path / "model.pt")
    loaded, meta = load_model(tmp_path / "model.pt")
    x = torch.randn(1, 1, 32, 24)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert meta["classes"] == ["a", "b", "c", "d"] and not loaded.training


class Payload:
    """Anything that is not plain tensors and containers must not be unpickled."""


def test_load_model_refuses_pickled_code(tmp_path) -> None:
    with open(tmp_path / "model.pt", "wb") as fh:
        pickle.dump(Payload(), fh, protocol=2)
    with pytest.raises(FalseCliError, match="not a falsecli model file"):
        load_model(tmp_path / "model.pt")
    with pytest.raises(FalseCliError, match="missing"):
        load_model(tmp_path / "none.pt")
    torch.save(torch.zeros(2), tmp_path / "tensor.pt")  # loads, but is no payload
    with pytest.raises(FalseCliError, match="not a falsecli model file .*Tensor, not a dict"):
        load_model(tmp_path / "tensor.pt")


def test_lone_sample_cannot_train() -> None:
    """Why the training loop never makes a batch of one (see Pool.batches)."""
    model = build_model(SMALL, 6).train()
    with pytest.raises(ValueError):
        model(torch.randn(1, 1, 32, 24))
    assert isinstance(model.classifier[0].convs[-1][2], nn.BatchNorm2d)
