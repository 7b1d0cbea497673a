"""falsecli benchmarks (issue #6): what bookkeeping costs next to the compute, and scale.

    python benchmarks/run.py [--quick] [--json] [--device auto|cpu|cuda] [--memory]

Measured in this one process (``--memory`` adds a child process), one line per benchmark:

- ``epoch_overhead``: a training epoch through falsecli's own code (``Session.train_epoch``:
  batch order, on-device batch assembly, loss normalisation, progress) over the bare
  forward / loss / backward / step on the same, pre-assembled batches; ``full_ratio``: an
  epoch of the real ``train()`` stage (training, prediction, tracking, metrics, checkpoint)
  over the bare training and prediction compute.
- ``tracking_overhead``: ``Tracker.record`` (correctness, switches, packing, appending) over
  the prediction pass it follows; ``datamap_ratio``: what the data maps add to the same pass
  (the label probabilities in the prediction pass, then ``DataMapTracker.record``), and
  ``met`` holds the goal for the two together (``with_datamap_ratio``).
- ``tracking_overhead_pool`` (``--pool``: this one alone): the same with the pool tracked
  (every 4th training section labelled, the other training sections tracked as the pool),
  and ``confidence_pass_ratio``: the once-per-run softmax statistics of the pool over one
  prediction pass.
- ``heatmap_f3``: forgetting, switch and never-learned maps from an F3-sized history
  (81 inlines 255 x 701, 141 crosslines 255 x 401, 60 epochs): seconds and the peak memory
  the computation adds.
- ``segy_load``: falsecli's SEG-Y reader over ``segyio.tools.cube`` on a 200 x 300 x 255 file.
- ``train_throughput``: pixels per second of a training epoch and of the prediction pass.
- ``train_memory_f3`` (``--memory``): peak RSS of ``train`` on an F3-shaped float64 volume.
- ``epoch_precision``, ``jobs_throughput`` and (``--demo``) ``demo_wall``: the speed issue's
  ratios on a CPU (benchmarks/speed.py).

Times are the best of several repeats (the fairest figure on a shared machine); every line
also has the individual times. ``--quick`` uses small sections; the full run uses F3-sized
ones on a GPU and medium ones on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import multiprocessing
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from falsecli.core import config, distributed
from falsecli.core.files import write_json
from falsecli.core.runtime import resolve_device
from falsecli.data.dataset import Section
from falsecli.method.datamaptrack import DataMapTracker
from falsecli.method.tracking import Tracker, offsets
from falsecli.method.training import Session, chunked_confusion, prepare
from falsecli.stages.train import train

import speed  # benchmarks/speed.py, beside this file

#: goals of the issue
GOALS = {"epoch_overhead": 1.10, "tracking_overhead": 0.03, "heatmap_seconds": 5.0,
         "heatmap_mb": 1024.0, "segy_load": 1.1}
#: training profiles: synthetic volume (inlines, crosslines, depth), ASPP width, batch size,
#: repeats of each timing, epochs of the real train() run
PROFILES: dict[str, dict[str, Any]] = {
    "quick-cpu": {"shape": [21, 41, 96], "aspp": 64, "batch": 4, "repeats": 5, "epochs": 4},
    "quick-cuda": {"shape": [101, 161, 255], "aspp": 256, "batch": 8, "repeats": 3,
                   "epochs": 3},
    "full-cpu": {"shape": [31, 61, 128], "aspp": 128, "batch": 8, "repeats": 5, "epochs": 4},
    "full-cuda": {"shape": [401, 701, 255], "aspp": 256, "batch": 8, "repeats": 5, "epochs": 4},
}
#: F3's tracked sections (every 5th inline and crossline of its 401 x 701 x 255 volume)
F3_TRACKED = ((81, 255, 701), (141, 255, 401))
F3_EPOCHS = 60
F3_SHAPE = (401, 701, 255)
SEGY_SHAPE = (200, 300, 255)


# ---------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _clock(device: torch.device, out: list[float]) -> Iterator[None]:
    """Append the wall time of the block to ``out``, the device's queued work included."""
    _sync(device)
    t0 = time.perf_counter()
    yield
    _sync(device)
    out.append(time.perf_counter() - t0)


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM, RssAnon...)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1)) / 1024


def _reset_peak() -> bool:
    """Reset VmHWM (the peak RSS) to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _config(profile: dict[str, Any], device: torch.device) -> config.Config:
    _, xl, z = profile["shape"]
    return config.resolve(sets=[
        f"data.synthetic.shape={profile['shape']}", f"data.synthetic.test_shape=[4,{xl},{z}]",
        f"model.aspp_channels={profile['aspp']}", f"train.batch_size={profile['batch']}",
        f"train.epochs={profile['epochs']}", f"train.device={device}", "train.aug=none"])


# ---------------------------------------------------------------- training benchmarks


def _bare_batches(s: Session) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The next epoch's batches, assembled ahead (the generator state is left as it was)."""
    state = s.gens["order"].get_state()
    batches = s.pool.batches(s.gens["order"], s.tc["batch_size"])[:s.n_batches]
    s.gens["order"].set_state(state)
    return [(images[:, None].contiguous(memory_format=torch.channels_last), labels)
            for images, labels in (s.pool.fetch(g, i) for g, i in batches)]


def _bare_epoch(s: Session, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Forward, loss, backward, step: the compute of a training epoch and nothing else."""
    s.model.train()
    for x, y in batches:
        with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.amp):
            loss = F.cross_entropy(s.model(x).float(), y.long(), ignore_index=255)
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        s.optimizer.step()


def _bare_predict(s: Session) -> None:
    """Forward and argmax of the evaluated sections, batched as falsecli batches them."""
    s.model.eval()
    size = s.tc["eval_batch_size"]
    with torch.inference_mode(), torch.autocast(s.device.type, dtype=torch.bfloat16,
                                                enabled=s.amp):
        for _, images in s.evalset.runs:
            for i in range(0, len(images), size):
                x = images[i:i + size].to(s.device)[:, None]
                s.model(x.contiguous(memory_format=torch.channels_last)).argmax(1)


def _tracking_times(s: Session, repeats: int, device: torch.device
                    ) -> tuple[list[float], list[float], list[float]]:
    """Seconds of each prediction pass, of the ``Tracker.record`` after it and of the val
    metrics, ``repeats`` times (after one more whose record has no switch row to compare)."""
    predict, record, metrics = [], [], []
    ev = s.evalset
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(Path(tmp), s.tracked, ev.labels[:ev.n_tracked], s.ds.classes,
                          s.ds.ignore_index)
        for _ in range(repeats + 1):
            with _clock(device, predict):
                pred = s.predict()
            with _clock(device, record):
                tracker.record(pred[:ev.n_tracked])
            with _clock(device, metrics):
                chunked_confusion(pred[ev.val], ev.labels[ev.val], len(s.ds.classes), 255).cpu()
    return predict[1:], record[1:], metrics[1:]


def _datamap_times(s: Session, repeats: int, device: torch.device
                   ) -> tuple[list[float], list[float], list[float]]:
    """Seconds of the prediction pass without and with the label probabilities of the data
    maps, interleaved, and of the ``DataMapTracker.record`` after the latter."""
    plain, with_probs, record = [], [], []
    ev = s.evalset
    datamap = DataMapTracker(ev.n_tracked, 1, device)
    for _ in range(repeats + 1):
        with _clock(device, plain):
            s.predict()
        with _clock(device, with_probs):
            pred = s.predict(probs=True)
        with _clock(device, record):
            datamap.record(ev.probs[:, :ev.n_tracked], pred[:ev.n_tracked])
    return plain[1:], with_probs[1:], record[1:]


def pool_tracking(profile: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """tracking_overhead with the pool tracked (``train.track: [val, pool]``, every 4th
    training section labelled, the others in the pool), and the once-per-run pass that
    writes the pool's softmax statistics (``confidence.json``) over one prediction pass."""
    from falsecli.data.dataset import load_dataset
    from falsecli.method.training import section_confidence

    cfg = _config(profile, device)
    train_sections = load_dataset(cfg).sections("train")
    cfg = config.merge(cfg, {"train": {"labelled": [t.name for t in train_sections[::4]],
                                       "track": ["val", "pool"]}})
    s = prepare(cfg, distributed.SINGLE, device)
    s.train_epoch()
    s.predict()
    predict, record, _ = _tracking_times(s, profile["repeats"], device)
    pool = [t for t in s.tracked if t.split == "pool"]
    confidence: list[float] = []
    for _ in range(profile["repeats"]):
        with _clock(device, confidence):
            section_confidence(s.model, s.ds, pool, s.tc["eval_batch_size"], s.amp)
    ratio = min(record) / min(predict)
    return {"name": "tracking_overhead_pool", "ratio": round(ratio, 5),
            "goal": GOALS["tracking_overhead"], "met": ratio <= GOALS["tracking_overhead"],
            "record_s": _round(record), "predict_s": _round(predict),
            "confidence_pass_ratio": round(min(confidence) / min(predict), 4),
            "tracked_pixels": s.evalset.n_tracked, "pool_sections": len(pool),
            "device": str(device), "threads": torch.get_num_threads(),
            "volume": profile["shape"]}


def training(profile: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """epoch_overhead, tracking_overhead and train_throughput on one synthetic volume."""
    cfg = _config(profile, device)
    s = prepare(cfg, distributed.SINGLE, device)
    s.train_epoch()  # warm-up: allocator, cuDNN autotuning of every shape
    s.predict()
    real, bare, pred_bare = [], [], []
    for _ in range(profile["repeats"]):  # interleaved, so that load changes hit both alike
        batches = _bare_batches(s)
        with _clock(device, bare):
            _bare_epoch(s, batches)
        del batches
        with _clock(device, real):
            s.train_epoch()
        with _clock(device, pred_bare):
            _bare_predict(s)

    predict, record, metrics = _tracking_times(s, profile["repeats"], device)
    plain, with_probs, dm_record = _datamap_times(s, profile["repeats"], device)
    ev = s.evalset

    # the whole stage, epoch after epoch: prediction, tracking, metrics, checkpoint included
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp), on_epoch=lambda epoch, row: stamps.append(time.perf_counter()))
    stage_epoch = min(np.diff(stamps))

    train_pixels = sum(len(i) * g.images[0].numel()
                       for g, i in s.pool.batches(s.gens["order"], s.tc["batch_size"]))
    base = {"device": str(device), "threads": torch.get_num_threads(),
            "volume": profile["shape"]}
    ratio = min(real) / min(bare)
    track = min(record) / min(predict)
    # the data maps' share: the probabilities in the prediction pass, then their update
    datamap = (max(min(with_probs) - min(plain), 0) + min(dm_record)) / min(plain)
    return [
        {"name": "epoch_overhead", "ratio": round(ratio, 4),
         "goal": GOALS["epoch_overhead"], "met": ratio <= GOALS["epoch_overhead"],
         "full_ratio": round(stage_epoch / (min(bare) + min(pred_bare)), 4),
         "epoch_s": _round(real), "bare_epoch_s": _round(bare),
         "stage_epoch_s": round(stage_epoch, 4), "bare_predict_s": _round(pred_bare),
         "batches": s.n_batches, **base},
        {"name": "tracking_overhead", "ratio": round(track, 5),
         "goal": GOALS["tracking_overhead"],
         "met": track + datamap <= GOALS["tracking_overhead"],
         "datamap_ratio": round(datamap, 5), "with_datamap_ratio": round(track + datamap, 5),
         "predict_probs_s": _round(with_probs), "predict_plain_s": _round(plain),
         "datamap_record_s": _round(dm_record),
         "with_metrics_ratio": round((min(record) + min(metrics)) / min(predict), 5),
         "record_s": _round(record), "predict_s": _round(predict),
         "tracked_pixels": ev.n_tracked, **base},
        {"name": "train_throughput", "train_px_per_s": round(train_pixels / min(real)),
         "predict_px_per_s": round(sum(ev.sizes) / min(predict)),
         "device_name": _device_name(device), **base},
    ]


def _round(values: list[float]) -> list[float]:
    return [round(v, 4) for v in values]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    return model.group(1) if model else "cpu"


# ---------------------------------------------------------------- heat maps at F3 scale


def _f3_history(run: Path, seed: int = 0) -> None:
    """A 60-epoch tracking history of F3's 222 tracked sections, in the format train writes
    (random bits: counting costs the same whatever the bits)."""
    rng = np.random.default_rng(seed)
    sections = [Section(f"{axis}_{i:04d}", "val", "train", axis, i, (depth, width))
                for axis, (count, depth, width) in zip(("inline", "crossline"), F3_TRACKED)
                for i in range(0, 5 * count, 5)]
    n_pixels = sum(s.shape[0] * s.shape[1] for s in sections)
    folder = run / "tracking"
    folder.mkdir(parents=True)
    labels = rng.integers(0, 6, n_pixels, dtype=np.uint8)
    labels[rng.random(n_pixels) < 0.01] = 255
    np.save(folder / "labels.npy", labels)
    width = (n_pixels + 7) // 8
    for name in ("correct.npy", "switch.npy"):
        rows = np.lib.format.open_memmap(folder / name, "w+", np.uint8, (F3_EPOCHS, width))
        for t in range(F3_EPOCHS):
            rows[t] = 0 if name == "switch.npy" and t == 0 else rng.integers(0, 256, width,
                                                                            dtype=np.uint8)
        rows.flush()
        del rows
    write_json(folder / "sections.json", {
        "classes": config.load_defaults()["data"]["classes"], "ignore_index": 255,
        "n_pixels": n_pixels, "epochs": F3_EPOCHS,
        "sections": [{**s.to_json(), "offset": o} for s, o in zip(sections, offsets(sections))]})


def heatmap_f3() -> dict[str, Any]:
    from falsecli.method.forgetting import event_maps
    from falsecli.method.history import load_tracking

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        _f3_history(Path(tmp))
        made = time.perf_counter() - t0
        rss_before = _status_mb("VmRSS")
        exact = _reset_peak()
        t0 = time.perf_counter()
        tracking = load_tracking(Path(tmp))
        maps = event_maps(tracking, F3_EPOCHS)
        seconds = time.perf_counter() - t0
        peak = _status_mb("VmHWM")
        images = tracking.images(maps.forgetting)
        assert len(images) == 222 and maps.never_learned.dtype == bool
        pixels = tracking.n_pixels
        del maps, tracking, images
    extra = peak - rss_before
    return {"name": "heatmap_f3", "seconds": round(seconds, 3), "peak_mb": round(extra, 1),
            "goal_seconds": GOALS["heatmap_seconds"], "goal_mb": GOALS["heatmap_mb"],
            "met": seconds <= GOALS["heatmap_seconds"] and extra <= GOALS["heatmap_mb"],
            "pixels": pixels, "epochs": F3_EPOCHS, "sections": 222,
            "rss_before_mb": round(rss_before, 1), "peak_is_exact": exact,
            "history_written_s": round(made, 2)}


# ---------------------------------------------------------------- SEG-Y


def segy_load(repeats: int) -> dict[str, Any]:
    import segyio

    from falsecli.data import segy

    rng = np.random.default_rng(0)
    volume = rng.standard_normal(SEGY_SHAPE, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "volume.sgy"
        t0 = time.perf_counter()
        segy.write(path, volume)
        written = time.perf_counter() - t0
        ours, theirs = [], []
        for _ in range(repeats):  # alternate, both from the page cache
            for out, read in ((ours, lambda: segy.read(path)),
                              (theirs, lambda: segyio.tools.cube(str(path)))):
                t0 = time.perf_counter()
                cube = read()
                out.append(time.perf_counter() - t0)
                assert np.array_equal(cube, volume)
                del cube
        size = path.stat().st_size
    ratio = min(ours) / min(theirs)
    return {"name": "segy_load", "ratio": round(ratio, 4), "goal": GOALS["segy_load"],
            "met": ratio <= GOALS["segy_load"], "falsecli_s": _round(ours),
            "segyio_cube_s": _round(theirs), "shape": list(SEGY_SHAPE),
            "file_mb": round(size / 2**20, 1), "write_s": round(written, 2)}


# ---------------------------------------------------------------- memory of train at F3 size


def _f3_volume(folder: Path) -> tuple[Path, Path]:
    """An F3-shaped float64 seismic .npy (573 MB) and uint8 labels, written inline by inline."""
    rng = np.random.default_rng(0)
    seismic = np.lib.format.open_memmap(folder / "seismic.npy", "w+", np.float64, F3_SHAPE)
    labels = np.lib.format.open_memmap(folder / "labels.npy", "w+", np.uint8, F3_SHAPE)
    depth_class = np.minimum(np.arange(F3_SHAPE[2]) * 6 // F3_SHAPE[2], 5).astype(np.uint8)
    for i in range(F3_SHAPE[0]):
        seismic[i] = rng.standard_normal(F3_SHAPE[1:])
        labels[i] = depth_class
    seismic.flush()
    labels.flush()
    return Path(seismic.filename), Path(labels.filename)


def _memory_child(folder: str, device: str, queue: Any) -> None:
    """Train on the F3-shaped files (a few batches per epoch) and report memory figures."""
    torch.set_num_threads(1)
    seismic, labels = _f3_volume(Path(folder))
    peaks = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            for key, peak in peaks.items():
                peaks[key] = max(peak, _status_mb(key))

    _reset_peak()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    after_epoch: list[tuple[float, float]] = []
    libc = ctypes.CDLL("libc.so.6")

    def measure(epoch: int, row: dict[str, Any]) -> None:
        """RssAnon after the epoch, as is and once glibc has returned its free heap memory
        (what is left then is live: a leak would grow it)."""
        before = _status_mb("RssAnon")
        libc.malloc_trim(0)
        after_epoch.append((before, _status_mb("RssAnon")))

    cfg = config.resolve(sets=[
        "data.source=files", f"data.seismic={seismic}", f"data.labels={labels}",
        "model.output_stride=16", "model.aspp_channels=32", "train.batch_size=2",
        "train.limit_batches=2", "train.epochs=3", "train.eval_batch_size=4",
        f"train.device={device}"])
    t0 = time.perf_counter()
    train(cfg, Path(folder) / "work", on_epoch=measure)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    queue.put({"peak_rss_mb": round(_status_mb("VmHWM"), 1),
               "peak_anon_mb": round(peaks["RssAnon"], 1),
               "peak_file_mb": round(peaks["RssFile"], 1),
               "anon_after_epoch_mb": [round(v, 1) for v, _ in after_epoch],
               "live_after_epoch_mb": [round(v, 1) for _, v in after_epoch],
               "seconds": round(seconds, 1)})


def train_memory_f3(device: torch.device) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        child = ctx.Process(target=_memory_child, args=(tmp, str(device), queue))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"the training child process failed (exit {child.exitcode})")
        result = queue.get(timeout=10)
    growth = result["live_after_epoch_mb"][-1] - result["live_after_epoch_mb"][0]
    return {"name": "train_memory_f3", **result, "growth_mb": round(growth, 1),
            "volume": list(F3_SHAPE), "volume_mb": round(np.prod(F3_SHAPE) * 8 / 2**20),
            "settings": "files source, output stride 16, ASPP 32, batch 2, 2 batches x 3 "
                        "epochs, all 222 tracked sections predicted every epoch",
            "device": str(device)}


# ---------------------------------------------------------------- main


def _show(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row), flush=True)
        return
    figures = "  ".join(f"{k} {v}" for k, v in row.items() if k != "name")
    print(f"{row['name']:<18} {figures}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (< 3 min on 2 CPUs)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--memory", action="store_true",
                        help="also measure peak RSS of train on an F3-shaped volume (minutes)")
    parser.add_argument("--demo", action="store_true",
                        help="also time `falsecli demo` from an empty workdir (minutes)")
    parser.add_argument("--compile", action="store_true",
                        help="epoch_precision also times torch.compile (minutes)")
    parser.add_argument("--pool", action="store_true",
                        help="only tracking_overhead_pool: the pool tracked (issue 14)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # shared cores: one thread gives stable timings
    profile = PROFILES[f"{'quick' if args.quick else 'full'}-{device.type}"]
    jobs: list[Callable[[], Any]] = [
        lambda: training(profile, device), lambda: pool_tracking(profile, device), heatmap_f3,
        lambda: segy_load(3 if args.quick else 5)]
    if device.type == "cpu":
        jobs += [lambda: speed.epoch_precision(_config(profile, device), profile["repeats"],
                                               args.compile), speed.jobs_throughput]
    if args.demo:
        jobs.append(speed.demo_wall)
    if args.pool:
        jobs = [lambda: pool_tracking(profile, device)]
    if args.memory:
        jobs.append(lambda: train_memory_f3(device))
    for job in jobs:
        rows = job()
        for row in rows if isinstance(rows, list) else [rows]:
            _show(row, args.json)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
