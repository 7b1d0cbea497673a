"""Cost of ``train.trace``: seconds per training step with the steps of some layers split into
shares, over the plain step, and the memory the shares take for F3.

    python benchmarks/tracing.py [--quick] [--json] [--device auto|cpu|cuda] [--batch N]

One training step as :class:`falsecli.method.training.Session` takes it (forward, the
per-share backward passes of :meth:`~falsecli.method.tracing.Tracer.split`, the backward,
Adam's step split by :meth:`~falsecli.method.tracing.Tracer.step`) with the paper's network
(output stride 8, ASPP 256, 6 classes) on a batch of F3 crosslines (255 x 401), random
weights and data (the cost does not depend on them). Configurations: plain; the head
(ASPP projection + classifier conv) per section; the head per class; every layer per class.
Memory: the shares' moments and sums (float32) for F3's 880 training sections (per section)
or 6 classes (per class), plus weight decay and generated samples. On a CPU one torch thread;
times are the best of the repeats (after a warm-up step). ``--quick``: 64 x 96 sections.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from falsecli.core.runtime import resolve_device
from falsecli.method.model import build_model
from falsecli.method.tracing import Tracer, traced_parameters
from falsecli.method.training import labelled_loss

#: F3's training sections with val_every 5 (320 inlines + 560 crosslines)
F3_TRAINING_SECTIONS = 880
CONFIGS = {"plain": None, "head_by_section": (["head"], ["section"]),
           "head_by_class": (["head"], ["class"]), "all_by_class": (["all"], ["class"])}


class _Group:
    """A pool group's stand-in (the tracer looks groups up by identity)."""


def measure(device: torch.device, shape: tuple[int, int], batch: int, repeats: int,
            config: tuple[list[str], list[str]] | None) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model({"output_stride": 8, "aspp_channels": 256}, 6).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.randn(batch, 1, *shape, device=device)
    labels = torch.randint(0, 6, (batch, *shape), device=device)
    norm = torch.tensor(labels.numel(), device=device)
    group, index = _Group(), torch.arange(batch, device=device)
    tracer = None
    if config is not None:
        layers, by = config
        # every F3 training section has shares (its moment decays at every step)
        tracer = Tracer(model, opt, layers, by,
                        sections=[str(i) for i in range(F3_TRAINING_SECTIONS)],
                        n_classes=6, ignore_index=255)
        tracer.group_ids[id(group)] = index

    def step() -> None:
        out = model(images)
        loss = labelled_loss(out, labels, None, 255, norm)
        opt.zero_grad(set_to_none=True)
        if tracer is not None:
            tracer.split(out, labels, None, norm, group, index, slice(0, batch))
        loss.backward()
        opt.step() if tracer is None else tracer.step()

    times = []
    for _ in range(repeats + 1):  # the first warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return {"seconds_per_step": min(times[1:]), "times": [round(t, 3) for t in times]}


def f3_memory() -> dict[str, float]:
    """GB of the shares' moments and sums on the device, and of one snapshot's sums on disk."""
    model = build_model({"output_stride": 8, "aspp_channels": 256}, 6)
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    out = {}
    for name, layers, shares in (("head_by_section", ["head"], F3_TRAINING_SECTIONS + 2),
                                 ("all_by_class", ["all"], 6 + 1)):
        params = sum(sizes[n] for n in traced_parameters(model, layers))
        out[f"{name}_parameters"] = params
        out[f"{name}_device_gb"] = 2 * 4 * params * shares / 1e9
        out[f"{name}_snapshot_gb"] = 4 * params * shares / 1e9
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated, of " + ", ".join(CONFIGS))
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    shape = (64, 96) if args.quick else (255, 401)
    result: dict[str, Any] = {"device": str(device), "shape": list(shape), "batch": args.batch}
    for name in ["plain", *(c for c in args.configs.split(",") if c != "plain")]:
        config = CONFIGS[name]
        result[name] = measure(device, shape, args.batch, args.repeats, config)
        ratio = result[name]["seconds_per_step"] / result["plain"]["seconds_per_step"]
        result[name]["ratio"] = ratio
        if not args.json:
            print(f"{name}: {result[name]['seconds_per_step']:.2f} s per step of "
                  f"{args.batch} x {shape[0]}x{shape[1]} on {device} ({ratio:.2f}x plain)",
                  flush=True)
    result["memory"] = f3_memory()
    print(json.dumps(result) if args.json else json.dumps(result["memory"]), flush=True)


if __name__ == "__main__":
    main()
