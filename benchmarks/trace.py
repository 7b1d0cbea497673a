"""Cost of ``falsecli trace``: seconds per (kept checkpoint x training section), and F3's total;
with ``--training``, what ``train.trace`` adds to a training step, and its memory for F3.

    python benchmarks/trace.py [--quick] [--json] [--device auto|cpu|cuda] [--batch N]
    python benchmarks/trace.py --training [--quick] [--batch 8] [--configs head_by_section,...]

One kept checkpoint's work on one batch of training sections is one forward-mode pass
(:func:`falsecli.method.influence.pixel_influence`) plus the per-class sums; the query
gradient (one backward pass per checkpoint) is timed apart. Measured for ``--layers last``
(the default) and ``all`` on F3-sized sections (inlines 255 x 701, crosslines 255 x 401) with
the paper's network (output stride 8, ASPP 256), random weights and data (the cost does not
depend on them). The F3 estimate: 12 kept checkpoints x (320 training inlines + 560 training
crosslines). On a CPU one torch thread (as on the shared 2-core machine); times are the best
of the repeats. ``--quick``: 64 x 128 sections, for a check that it runs.

``--training``: one training step as :class:`falsecli.method.training.Session` takes it
(forward, the per-share backward passes of :meth:`~falsecli.method.tracing.Tracer.split`, the
backward, Adam's step split by :meth:`~falsecli.method.tracing.Tracer.step`) on a batch of F3
crosslines (255 x 401; ``--quick``: 64 x 96) with all 880 F3 training sections holding shares;
configurations: plain, the head (ASPP projection + classifier conv) per section or per class,
every layer per class. Memory: the shares' moments and sums (float32) for F3. The first step
warms up; times are the best of the repeats after it.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from falsecli.core.runtime import resolve_device
from falsecli.method.influence import (Query, class_sums, parameter_names, pixel_influence,
                                       region_gradient)
from falsecli.method.model import build_model
from falsecli.method.tracing import Tracer, traced_parameters
from falsecli.method.training import labelled_loss

#: F3's training sections with val_every 5 (401 inlines, 701 crosslines): (count, depth, width)
F3_SECTIONS = {"inline": (320, 255, 701), "crossline": (560, 255, 401)}
F3_CHECKPOINTS = 12
QUICK_SECTIONS = {"inline": (320, 64, 128), "crossline": (560, 64, 96)}
#: F3's training sections with val_every 5 (320 inlines + 560 crosslines)
F3_TRAINING_SECTIONS = 880
#: ``--training``: plain steps and steps with train.trace's (layers, by)
CONFIGS = {"plain": None, "head_by_section": (["head"], ["section"]),
           "head_by_class": (["head"], ["class"]), "all_by_class": (["all"], ["class"])}


def _best(fn: Any, repeats: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def measure(device: torch.device, layers: str, sections: dict[str, tuple[int, int, int]],
            batch: int, repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model({"output_stride": 8, "aspp_channels": 256}, 6).to(device).eval()
    names = parameter_names(model, layers)
    out: dict[str, Any] = {"layers": layers, "parameters": sum(
        p.numel() for n, p in model.named_parameters() if n in names)}
    rng = np.random.default_rng(0)
    for kind, (_, depth, width) in sections.items():
        labels = rng.integers(0, 6, (depth, width)).astype(np.uint8)
        query = Query(rng.standard_normal((depth, width)).astype(np.float32), labels,
                      labels == 4)
        tangent = region_gradient(model, names, query, 255)  # also the warm-up
        images = torch.randn(batch, depth, width, device=device)
        labs = torch.from_numpy(np.stack([labels] * batch)).to(device)

        def step() -> None:
            maps = pixel_influence(model, tangent, images, labs, 255)
            class_sums(maps, labs, 6, 255).cpu()

        step()
        times = _best(step, repeats, device)
        grad = _best(lambda: region_gradient(model, names, query, 255), repeats, device)
        out[kind] = {"shape": [depth, width], "seconds_per_section": min(times) / batch,
                     "times": [round(t, 3) for t in times], "batch": batch,
                     "query_gradient_seconds": min(grad)}
    per_ckpt = sum(n * out[kind]["seconds_per_section"] for kind, (n, _, _) in sections.items())
    per_ckpt += min(out[k]["query_gradient_seconds"] for k in sections)
    out["f3_hours"] = F3_CHECKPOINTS * per_ckpt / 3600
    return out


class _Group:
    """A pool group's stand-in (the tracer looks groups up by identity)."""


def measure_training(device: torch.device, shape: tuple[int, int], batch: int, repeats: int,
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

    times = _best(step, repeats + 1, device)  # the first warms up
    return {"seconds_per_step": min(times[1:]), "times": [round(t, 3) for t in times]}


def f3_memory() -> dict[str, float]:
    """GB of the shares' moments and sums on the device, and of one snapshot's sums on disk."""
    model = build_model({"output_stride": 8, "aspp_channels": 256}, 6)
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    out = {}
    for name, layers, shares in (("head_by_section", ["head"], F3_TRAINING_SECTIONS + 3),
                                 ("all_by_class", ["all"], 6 + 2)):
        params = sum(sizes[n] for n in traced_parameters(model, layers))
        out[f"{name}_parameters"] = params
        out[f"{name}_device_gb"] = 2 * 4 * params * shares / 1e9
        out[f"{name}_snapshot_gb"] = 4 * params * shares / 1e9
    return out


def training(args: argparse.Namespace, device: torch.device) -> None:
    """``--training``: each configuration's step time over the plain step's, F3's memory."""
    shape = (64, 96) if args.quick else (255, 401)
    result: dict[str, Any] = {"device": str(device), "shape": list(shape), "batch": args.batch}
    for name in ["plain", *(c for c in args.configs.split(",") if c != "plain")]:
        result[name] = measure_training(device, shape, args.batch, args.repeats, CONFIGS[name])
        ratio = result[name]["seconds_per_step"] / result["plain"]["seconds_per_step"]
        result[name]["ratio"] = ratio
        if not args.json:
            print(f"{name}: {result[name]['seconds_per_step']:.2f} s per step of "
                  f"{args.batch} x {shape[0]}x{shape[1]} on {device} ({ratio:.2f}x plain)",
                  flush=True)
    result["memory"] = f3_memory()
    print(json.dumps(result) if args.json else json.dumps(result["memory"]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=None, help="2; --training: 8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--training", action="store_true")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="--training: comma-separated, of " + ", ".join(CONFIGS))
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    if args.training:
        args.batch = args.batch or 8
        training(args, device)
        return
    args.batch = args.batch or 2
    sections = QUICK_SECTIONS if args.quick else F3_SECTIONS
    for layers in ("last", "all"):
        result = {"name": f"trace_{layers}", "device": str(device),
                  **measure(device, layers, sections, args.batch, args.repeats)}
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            cells = ", ".join(f"{k} {result[k]['shape'][0]}x{result[k]['shape'][1]} "
                              f"{result[k]['seconds_per_section']:.2f} s/section"
                              for k in sections)
            print(f"trace --layers {layers} ({result['parameters']:,} parameters) on {device}: "
                  f"{cells}; query gradient "
                  f"{result['inline']['query_gradient_seconds']:.2f} s per checkpoint; "
                  f"F3 (880 sections x 12 checkpoints) ~ {result['f3_hours']:.1f} h", flush=True)


if __name__ == "__main__":
    main()
