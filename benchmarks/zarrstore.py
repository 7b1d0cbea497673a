"""Benchmark of ``--format zarr`` (issue #28): the Zarr writer's peak memory and time on an
F3-sized cube.

    python benchmarks/zarrstore.py [--inlines N]

Writes a float32 volume of N x 701 x 255 random values (N = 401: F3's size) as a
memory-mapped ``.npy`` in a temporary folder, then, in a fresh child process, copies it into a
Zarr store with :func:`falsecli.data.zarrstore.write_volumes` (as ``predict --format zarr``
does for each result). Prints one JSON line: seconds, peak RSS (VmHWM) in MB, store size.
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


def _write(folder: Path, shape: tuple[int, int, int], queue: Any) -> None:
    from falsecli.data.geometry import Geometry
    from falsecli.data.zarrstore import write_volumes

    coords = np.zeros(shape[:2])
    geometry = Geometry(np.arange(100, 100 + shape[0]), np.arange(300, 300 + shape[1]), 0.0,
                        4.0, shape[2], "ms", coords, coords)
    start = time.perf_counter()
    write_volumes(folder / "store.zarr", geometry, {"confidence": folder / "volume.npy"})
    seconds = time.perf_counter() - start
    peak = next(int(line.split()[1]) / 1024 for line in
                Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    queue.put((seconds, peak))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inlines", type=int, default=401)
    args = parser.parse_args()
    shape = (args.inlines, F3_CROSSLINES, F3_DEPTH)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        volume = np.lib.format.open_memmap(folder / "volume.npy", "w+", np.float32, shape)
        rng = np.random.default_rng(0)
        for i in range(0, shape[0], 16):
            volume[i:i + 16] = rng.random((min(16, shape[0] - i), *shape[1:]), np.float32)
        volume.flush()
        del volume
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        child = context.Process(target=_write, args=(folder, shape, queue))
        child.start()
        seconds, peak = queue.get()
        child.join()
        size = sum(p.stat().st_size for p in (folder / "store.zarr").rglob("*") if p.is_file())
        print(json.dumps({"shape": list(shape), "seconds": round(seconds, 1),
                          "peak_rss_mb": round(peak),
                          "volume_mb": round(4 * int(np.prod(shape)) / 2**20),
                          "store_mb": round(size / 2**20)}))


if __name__ == "__main__":
    main()
