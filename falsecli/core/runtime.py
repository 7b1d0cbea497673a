"""Device choice and seeding, shared by every stage that computes."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from falsecli.core.errors import FalseCliError


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda``/``cuda:N`` must exist or we say so."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise FalseCliError(f"--device '{spec}': expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FalseCliError(f"--device {spec}: no CUDA device is available here; "
                                "use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FalseCliError(f"--device {spec}: only {torch.cuda.device_count()} CUDA "
                                "device(s) are visible")
    elif device.type != "cpu":
        raise FalseCliError(f"--device '{spec}': expected auto, cpu, cuda or cuda:N")
    return device


def bf16_autocast(device: torch.device, wanted: bool) -> bool:
    """Whether ``train.amp`` (bf16 autocast) applies on ``device``: on a GPU that computes in
    bf16, and on a CPU with AVX-512 BF16 or AMX, where the matrix kernels run in bf16 natively
    (1.3-1.8x per training step measured on this project's CPU); elsewhere bf16 would be
    emulated, slower than fp32, so fp32 it is."""
    if not wanted:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return any(getattr(cpu, probe, lambda: False)()
               for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def seed_everything(seed: int, deterministic_cpu: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data order/augmentation."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic_cpu:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen
