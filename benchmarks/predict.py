"""Benchmark of ``falsecli predict`` (issue #13): peak memory and throughput on an F3-sized
volume.

    python benchmarks/predict.py [--inlines N] [--axes both|inline|crossline] [--aspp 64]

Writes a float32 volume of N x 701 x 255 (N = 401: F3's size) as a memory-mapped ``.npy`` in
a temporary folder, a randomly initialised model of the demo's size (ASPP 64) as a complete
``train`` run, then, each in a fresh child process with one torch thread:

- ``predict``: the real ``predict()`` (sweep, softmax averaging, facies/confidence/entropy
  written to memory-mapped ``.npy``, statistics); its peak RSS (VmHWM) and time;
- ``bare``: only the network's forward passes over the same sections (read and normalised
  beforehand, outside the timing).

Prints one JSON line: ``ratio`` = predict time (the sweep and the writes, as the summary's
``predict_seconds``) over the bare forward time, voxels per second, peak RSS in MB.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

F3_CROSSLINES, F3_DEPTH = 701, 255


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _volume(path: Path, n_il: int) -> None:
    """An F3-like float32 volume, written inline block by inline block."""
    vol = np.lib.format.open_memmap(path, "w+", np.float32, (n_il, F3_CROSSLINES, F3_DEPTH))
    rng = np.random.default_rng(0)
    for i in range(0, n_il, 16):
        vol[i:i + 16] = rng.standard_normal(vol[i:i + 16].shape, dtype=np.float32)
    vol.flush()


def _model_run(workdir: Path, aspp: int) -> dict[str, Any]:
    """A complete ``train`` run holding an untrained network of ASPP width ``aspp``."""
    from falsecli.core import config
    from falsecli.core.swap import stage_run
    from falsecli.method.model import MODEL, build_model, save_model

    cfg = config.resolve(sets=[f"model.aspp_channels={aspp}", "train.device=cpu"])
    model = build_model(cfg["model"], len(cfg["data"]["classes"]))
    with stage_run(workdir, "train", cfg) as run:
        save_model(run.out(MODEL), {"state_dict": model.state_dict(), "config": cfg,
                                    "classes": cfg["data"]["classes"],
                                    "norm": {"mean": 0.0, "std": 1.0}, "ignore_index": 255})
    return cfg


def _predict(args: tuple[Path, Path, str, int], queue: Any) -> None:
    import torch

    from falsecli.core import config
    from falsecli.stages.predict import predict

    torch.set_num_threads(1)
    workdir, volume, axes, aspp = args
    cfg = config.resolve(sets=[f"model.aspp_channels={aspp}", "train.device=cpu",
                               f"predict.axes={axes}"])
    t0 = time.perf_counter()
    summary = predict(cfg, workdir, workdir / "out", input_path=volume, fmt="npy")
    queue.put({"wall_seconds": time.perf_counter() - t0,
               "predict_seconds": summary["volumes"][0]["predict_seconds"],
               "peak_rss_mb": _peak_rss_mb()})


def _bare(args: tuple[Path, Path, str, int], queue: Any) -> None:
    """Forward passes only, over the sections predict() sees, in its batches."""
    import torch

    from falsecli.method.inference import n_sections, sections
    from falsecli.method.model import MODEL, load_model

    torch.set_num_threads(1)
    workdir, volume, axes, _ = args
    model, _ = load_model(workdir / "train" / MODEL)
    vol = np.load(volume, mmap_mode="r")
    batch = 8
    passes = ["inline", "crossline"] if axes == "both" else [axes]
    elapsed = 0.0
    for axis in passes:
        count = vol.shape[0 if axis == "inline" else 1]
        for start in range(0, count, batch):
            x = torch.from_numpy(sections(vol, axis, start, min(start + batch, count))
                                 ).transpose(1, 2)[:, None].contiguous(
                memory_format=torch.channels_last)
            t0 = time.perf_counter()
            with torch.inference_mode():
                model(x)
            elapsed += time.perf_counter() - t0
    queue.put({"bare_seconds": elapsed, "sections": n_sections(vol.shape, axes)})


def _child(fn: Any, args: tuple[Path, Path, str, int]) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=fn, args=(args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inlines", type=int, default=401)
    parser.add_argument("--axes", default="both", choices=("inline", "crossline", "both"))
    parser.add_argument("--aspp", type=int, default=64)
    parser.add_argument("--no-bare", action="store_true", help="only predict (memory)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        volume = tmp / "volume.npy"
        _volume(volume, opts.inlines)
        _model_run(tmp / "w", opts.aspp)
        args = (tmp / "w", volume, opts.axes, opts.aspp)
        result: dict[str, Any] = {"name": "predict", "shape": [opts.inlines, F3_CROSSLINES,
                                                               F3_DEPTH],
                                  "axes": opts.axes, "aspp": opts.aspp, "threads": 1}
        result.update(_child(_predict, args))
        voxels = opts.inlines * F3_CROSSLINES * F3_DEPTH
        result["voxels_per_s"] = round(voxels / result["predict_seconds"])
        if not opts.no_bare:
            result.update(_child(_bare, args))
            result["ratio"] = round(result["predict_seconds"] / result["bare_seconds"], 3)
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v
                          for k, v in result.items()}))


if __name__ == "__main__":
    main()
