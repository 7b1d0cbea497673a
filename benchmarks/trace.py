"""Cost of ``falsecli trace``: seconds per (kept checkpoint x training section), and F3's total.

    python benchmarks/trace.py [--quick] [--json] [--device auto|cpu|cuda] [--batch N]

One kept checkpoint's work on one batch of training sections is one forward-mode pass
(:func:`falsecli.method.influence.pixel_influence`) plus the per-class sums; the query
gradient (one backward pass per checkpoint) is timed apart. Measured for ``--layers last``
(the default) and ``all`` on F3-sized sections (inlines 255 x 701, crosslines 255 x 401) with
the paper's network (output stride 8, ASPP 256), random weights and data (the cost does not
depend on them). The F3 estimate: 12 kept checkpoints x (320 training inlines + 560 training
crosslines). On a CPU one torch thread (as on the shared 2-core machine); times are the best
of the repeats. ``--quick``: 64 x 128 sections, for a check that it runs.
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

#: F3's training sections with val_every 5 (401 inlines, 701 crosslines): (count, depth, width)
F3_SECTIONS = {"inline": (320, 255, 701), "crossline": (560, 255, 401)}
F3_CHECKPOINTS = 12
QUICK_SECTIONS = {"inline": (320, 64, 128), "crossline": (560, 64, 96)}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
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
