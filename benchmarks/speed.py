"""The speed issue's ratios, each measured in one run (benchmarks/run.py prints them):

- ``epoch_precision``: a bare training epoch (forward, loss, backward, Adam) in fp32 over the
  same in bf16 autocast, on the same batches, interleaved; and the same for ``torch.compile``
  (``--compile``: fp32 eager over compiled, compile time apart).
- ``jobs_throughput``: retraining runs per hour with ``--jobs 2`` over ``--jobs 1`` (the same
  four runs from one ``train/``, each batch in a fresh copy of the workdir).
- ``demo_wall`` (``--demo``): ``falsecli demo`` from an empty workdir, seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from falsecli.core import config, distributed
from falsecli.core.jobs import cores
from falsecli.core.parallel import Parallel
from falsecli.core.runtime import bf16_autocast
from falsecli.method.training import Session, prepare

#: goals of the speed issue on the project's 2-core machine
GOALS = {"demo_seconds": 150.0}
#: the retraining runs of jobs_throughput: the demo's volume and network, 4 epochs each (runs
#: of a few seconds would time the workers' start rather than the runs)
JOBS_SETS = ["data.synthetic.shape=[48,48,80]", "data.synthetic.test_shape=[16,48,80]",
             "model.aspp_channels=64", "train.epochs=4", "train.batch_size=8",
             "train.lr=0.002", "train.device=cpu", "retrain.augs=[flip]",
             "retrain.seeds=[1,2,3,4]"]


def _epoch_seconds(s: Session, amp: bool, model: Any, repeats: int) -> list[float]:
    """Seconds of bare epochs of ``model`` on the session's next batches."""
    out = []
    batches = [(images[:, None].contiguous(memory_format=torch.channels_last), labels)
               for images, labels in (s.pool.fetch(g, i) for g, i in
                                      s.pool.batches(s.gens["order"], s.tc["batch_size"]))]
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x, y in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(x).float(), y.long(), ignore_index=255)
            s.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            s.optimizer.step()
        out.append(time.perf_counter() - t0)
    return out


def epoch_precision(cfg: config.Config, repeats: int, compile_too: bool) -> dict[str, Any]:
    """fp32 / bf16 (and eager / compiled) epoch time on the CPU."""
    s = prepare(cfg, distributed.SINGLE, torch.device("cpu"))
    s.model.train()
    supported = bf16_autocast(torch.device("cpu"), True)
    fp32, bf16 = [], []
    for _ in range(repeats):  # interleaved, so that load changes hit both alike
        fp32 += _epoch_seconds(s, False, s.model, 1)
        bf16 += _epoch_seconds(s, True, s.model, 1) if supported else []
    row: dict[str, Any] = {"name": "epoch_precision", "bf16_supported": supported,
                           "fp32_s": [round(v, 3) for v in fp32],
                           "bf16_s": [round(v, 3) for v in bf16],
                           "threads": torch.get_num_threads()}
    if supported:
        row["fp32_over_bf16"] = round(min(fp32) / min(bf16), 3)
    if compile_too:
        t0 = time.perf_counter()
        compiled = torch.compile(s.model)
        first = _epoch_seconds(s, False, compiled, 1)[0]
        eager, fast = [], []
        for _ in range(repeats):
            eager += _epoch_seconds(s, False, s.model, 1)
            fast += _epoch_seconds(s, False, compiled, 1)
        row.update(compile_first_epoch_s=round(first, 1),
                   compile_total_s=round(time.perf_counter() - t0, 1),
                   eager_over_compiled=round(min(eager) / min(fast), 3))
    return row


def jobs_throughput() -> dict[str, Any]:
    """Runs per hour of four independent retraining runs, two at a time over one at a time."""
    from falsecli.stages.retrain import retrain
    from falsecli.stages.train import train

    cfg = config.resolve(sets=JOBS_SETS)
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        train(cfg, base)
        threads = torch.get_num_threads()
        for n in ("1", "2"):
            work = Path(tmp) / f"jobs{n}"
            shutil.copytree(base, work)
            # one run at a time has every core; two have half each (what --jobs does)
            torch.set_num_threads(cores() if n == "1" else threads)
            t0 = time.perf_counter()
            retrain(cfg, work, parallel=Parallel(n))
            seconds[n] = time.perf_counter() - t0
        torch.set_num_threads(threads)
    runs = len(cfg["retrain"]["seeds"])
    return {"name": "jobs_throughput", "runs": runs, "cores": cores(),
            "runs_per_hour_jobs1": round(3600 * runs / seconds["1"], 1),
            "runs_per_hour_jobs2": round(3600 * runs / seconds["2"], 1),
            "jobs2_over_jobs1": round(seconds["1"] / seconds["2"], 3),
            "seconds": {k: round(v, 1) for k, v in seconds.items()}}


def demo_wall() -> dict[str, Any]:
    """``falsecli demo`` in a fresh workdir, as a user runs it (``--jobs auto``)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "falsecli", "demo", "-w", tmp, "--quiet"],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"falsecli demo failed: {done.stderr.strip()[-500:]}")
    return {"name": "demo_wall", "seconds": round(seconds, 1), "goal": GOALS["demo_seconds"],
            "met": seconds <= GOALS["demo_seconds"]}
