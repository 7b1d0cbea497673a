"""DeepLabv3 (torchvision's ASPP head) on a dilated, single-channel torchvision ResNet-18.

Scruff and Zechstein are only a few samples thick, so the backbone stops downsampling at
output stride 8 or 16 and dilates the last stages instead, as torchvision does for its
Bottleneck ResNets (its BasicBlock refuses ``replace_stride_with_dilation``, so the strides
and dilations of ResNet-18 are set here). Random initialisation: nothing is downloaded.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18
from torchvision.models.segmentation.deeplabv3 import ASPP

from falsecli.core import checkpoint
from falsecli.core.errors import FalseCliError

#: a training run's network, written by :func:`save_model`, read by :func:`load_model`
MODEL = "model.pt"
#: the weights kept during training (``train.keep_every``): ``kept/epoch_0005.pt`` ...,
#: written by :func:`save_kept`, listed by :func:`kept_epochs`, read by :func:`load_kept`
KEPT = "kept"
KEPT_FILE = "epoch_{:04d}.pt"
KEPT_PATTERN = re.compile(r"epoch_(\d{4,})\.pt")
#: ASPP rates per output stride (DeepLabv3 doubles them when the stride halves)
ATROUS_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
#: layers whose stride becomes a dilation, per output stride
DILATED_LAYERS = {16: ("layer4",), 8: ("layer3", "layer4")}


class DeepLabV3(nn.Module):
    """Backbone features -> ASPP head -> logits upsampled to the input size (any H, W)."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _dilate(layer: nn.Sequential, previous: int) -> int:
    """Replace the stride 2 of a ResNet layer by dilation; return the new dilation.

    Like torchvision's ``replace_stride_with_dilation``: the first block keeps the dilation
    of the layer before it (its input is still at that resolution), the others use twice it.
    """
    dilation = previous * 2
    first = layer[0]
    first.stride = 1
    first.conv1.stride = (1, 1)
    first.downsample[0].stride = (1, 1)
    for i, block in enumerate(layer):
        d = previous if i == 0 else dilation
        for conv in (block.conv1, block.conv2):
            conv.dilation, conv.padding = (d, d), (d, d)
    return dilation


def build_model(model_cfg: dict[str, Any], n_classes: int) -> DeepLabV3:
    """The segmentation network of ``cfg['model']`` (output_stride 8|16, aspp_channels)."""
    stride = int(model_cfg["output_stride"])
    if stride not in ATROUS_RATES:
        raise FalseCliError(f"config key 'model.output_stride' is {stride}; it must be 8 or 16")
    width = int(model_cfg["aspp_channels"])
    if width < 1:
        raise FalseCliError(f"config key 'model.aspp_channels' is {width}; it must be at least 1")
    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    dilation = 1
    for name in DILATED_LAYERS[stride]:
        dilation = _dilate(getattr(net, name), dilation)
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    backbone = nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names))
    classifier = nn.Sequential(  # torchvision's DeepLabHead with a configurable width
        ASPP(512, ATROUS_RATES[stride], width),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, n_classes, 1),
    )
    return DeepLabV3(backbone, classifier)


def save_model(path: Path, payload: dict[str, Any]) -> None:
    """Write a trained network's ``payload`` (``state_dict``, ``config``, ``classes``, ``norm``,
    ...) as ``model.pt``, with host tensors so that it loads on a machine without the GPU
    that trained it."""
    checkpoint.save(path, checkpoint.host_copy(payload))


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[DeepLabV3, dict[str, Any]]:
    """A trained ``model.pt`` as an eval-mode network, plus its payload (config, classes,
    norm)."""
    fix = "train it again with 'falsecli train --force'"
    payload = checkpoint.load(path, "model file", fix)
    try:
        model = build_model(payload["config"]["model"], len(payload["classes"]))
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise FalseCliError(f"{path}: not a falsecli model file ({exc!r}) — {fix}") from None
    return model.to(device).eval(), payload


def kept_path(run: Path, epoch: int) -> Path:
    """Where the weights after ``epoch`` of the run in folder ``run`` are kept."""
    return Path(run) / KEPT / KEPT_FILE.format(epoch)


def save_kept(run: Path, epoch: int, state_dict: dict[str, torch.Tensor], lr: float) -> Path:
    """Keep the weights after ``epoch`` with the learning rate of the steps that led there
    (what TracIn weighs each checkpoint by); returns the file."""
    path = kept_path(run, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(path, checkpoint.host_copy({"state_dict": state_dict, "epoch": epoch,
                                                "lr": float(lr)}))
    return path


def kept_epochs(run: Path) -> list[int]:
    """The epochs whose weights the run in folder ``run`` kept, in order."""
    folder = Path(run) / KEPT
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir()
                  if (m := KEPT_PATTERN.fullmatch(p.name)))


def load_kept(run: Path, epoch: int) -> dict[str, Any]:
    """Kept weights: ``{"state_dict", "epoch", "lr"}``."""
    return checkpoint.load(kept_path(run, epoch), "kept checkpoint",
                           "train the run again with 'falsecli train --force'",
                           keys=("state_dict", "epoch", "lr"))
