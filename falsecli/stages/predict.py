"""``falsecli predict``: a training run's model applied to whole volumes.

For each volume (``--input``, else the configured test volumes) it writes, under
``--out DIR/<volume>/``, the facies (uint8 class ids), the confidence (largest softmax
probability) and the entropy (normalised to [0, 1]) as ``.npy`` volumes (inline x crossline x
depth, like the input) and, for SEG-Y input or ``--format segy``, as IEEE-float SEG-Y files
that carry the input's textual, binary and trace headers (a ``.npy`` input gets the regular
grid of ``synth --format segy``). ``DIR/predict.json`` is the summary.

The output is not a workdir stage: it goes to a folder of the user's choosing, built in
``.<name>.partial`` beside it and swapped into place at the end
(:func:`~falsecli.core.swap.out_folder`), so that a killed prediction leaves no half-written
result, and the next prediction into the same folder removes what it left. Nothing holds a
whole volume: the input is memory-mapped or read trace block by trace block, the outputs are
memory-mapped (their disk space reserved first) and written as produced.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from falsecli.core import console
from falsecli.core.config import Config
from falsecli.core.errors import FalseCliError
from falsecli.core.files import reserve, write_json
from falsecli.core.manifest import Stage
from falsecli.core.swap import out_folder
from falsecli.data import segy, volumes
from falsecli.data.volumes import SEGY_SUFFIXES, Volume

#: the three results, each written as ``<name>.npy`` (and ``<name>.sgy``), with its dtype
RESULTS = {"facies": np.uint8, "confidence": np.float32, "entropy": np.float32}
#: a quick look at each predicted volume: its middle inline with facies and confidence
PREVIEW_PNG = "preview.png"
#: the summary of a prediction folder; its presence marks a folder --force may replace
SUMMARY_JSON = "predict.json"
#: the results of one volume as a Zarr store (``--format zarr``), for xarray
ZARR_STORE = "prediction.zarr"
#: samples per block when copying a result into SEG-Y or scoring it (16 MB of float32)
BLOCK_SAMPLES = 1 << 22
FORMATS = ("npy", "segy", "zarr")


def _inputs(cfg: Config, input_path: Path | None, labels: Path | None) -> list[Volume]:
    """The volumes to predict: ``--input`` (with ``--labels``), else the data's test volumes;
    SEG-Y seismic stays on disk."""
    d = cfg["data"]
    if input_path is None:
        if labels is not None:
            raise FalseCliError("--labels needs --input (the configured test volumes bring "
                                "their own labels)")
        _, tests = volumes.load(d, lazy=True)
        if not tests:
            raise FalseCliError("no test volume is configured; give a volume with --input PATH "
                                "(.npy or SEG-Y)")
        return tests
    input_path = Path(input_path)
    seismic = volumes.read_array(input_path, d["segy"], lazy=True)
    lab = None if labels is None else volumes.read_array(labels, d["segy"], labels=True)
    return [Volume(input_path.stem, seismic, lab, str(input_path),
                   "" if labels is None else str(labels),
                   volumes.survey_geometry(input_path, seismic, d["segy"]))]


def _model(cfg: Config, workdir: Path) -> tuple[Any, dict[str, Any], Path, Any]:
    """The run's network on the configured device, its payload, its path and the device."""
    from falsecli.core.runtime import resolve_device
    from falsecli.method.model import MODEL, load_model

    run = cfg["predict"]["run"]
    stage = Stage(Path(workdir), run)
    stage.require("predict")
    device = resolve_device(cfg["train"]["device"])
    path = stage.path / MODEL
    model, payload = load_model(path, device)
    if list(payload["classes"]) != list(cfg["data"]["classes"]):
        raise FalseCliError(
            f"predict: {path} was trained on classes {payload['classes']}, but data.classes "
            f"is {cfg['data']['classes']}; set data.classes to the model's classes or choose "
            "another --run")
    return model, payload, path, device


def check_out(out: Path, force: bool, marker: str, command: str) -> None:
    """Refuse an existing output folder unless ``force``; never replace one that lacks the
    ``marker`` summary of ``command`` (``--force --out .`` must not delete a project)."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not force:
        raise FalseCliError(f"{command}: {out} exists — use --force to replace it, or choose "
                            "another --out")
    if not (out / marker).is_file():
        raise FalseCliError(f"{command}: {out} exists and holds no {marker}, so it is not "
                            f"a falsecli {command} folder; --force replaces only those — "
                            "choose another --out")


def _inline_blocks(shape: tuple[int, ...]) -> Iterator[slice]:
    step = max(1, BLOCK_SAMPLES // max(int(np.prod(shape[1:])), 1))
    for start in range(0, shape[0], step):
        yield slice(start, min(start + step, shape[0]))


def _predict_volume(model: Any, payload: dict[str, Any], vol: Volume, folder: Path,
                    cfg: Config, amp: bool, bar: Any) -> dict[str, Path]:
    """Facies, confidence and entropy of ``vol`` as memory-mapped .npy files in ``folder``."""
    from falsecli.method.inference import n_sections, scores, sweep

    pc = cfg["predict"]
    shape = tuple(vol.seismic.shape)
    folder.mkdir(parents=True)
    paths = {name: folder / f"{name}.npy" for name in RESULTS}
    for name, dtype in RESULTS.items():  # created, then mapped per block: bounded memory
        np.lib.format.open_memmap(paths[name], "w+", dtype, shape)
        reserve(paths[name])  # a full disk: one line now, not a bus error in the mapping
    task = bar.add_task(vol.name, total=n_sections(shape, pc["axes"]), info="")
    blocks = sweep(model, vol.seismic, payload["norm"], pc["axes"], pc["batch_size"], amp,
                   folder / ".inline-probabilities.npy", lambda n: bar.advance(task, n))
    for axis, start, probs in blocks:
        for name, values in zip(RESULTS, scores(probs)):
            out = np.load(paths[name], mmap_mode="r+")
            if axis == "inline":
                out[start:start + len(values)] = values
            else:
                out[:, start:start + len(values)] = values.transpose(1, 0, 2)
            del out
    return paths


def _write_segy(paths: dict[str, Path], vol: Volume, cfg: Config) -> list[Path]:
    """Each result as SEG-Y beside its .npy: the input's headers when it is SEG-Y, else a
    regular grid."""
    written = []
    for name, path in paths.items():
        target = path.with_suffix(".sgy")
        shape = tuple(vol.seismic.shape)
        if isinstance(vol.seismic, segy.SegyVolume):
            writer = segy.create_like(target, vol.seismic.survey)
        else:
            writer = segy.create_regular(
                target, shape, cfg["data"]["segy"]["iline"], cfg["data"]["segy"]["xline"],
                title=f"falsecli predict: {name} of {vol.source}")
        with writer as w:
            for rows in _inline_blocks(shape):
                w.write(rows.start, np.load(path, mmap_mode="r")[rows])
        written.append(target)
    return written


def _write_zarr(paths: dict[str, Path], vol: Volume, classes: list[str], run: str) -> Path:
    """The three results as one Zarr store on the volume's survey coordinates."""
    from falsecli.data.zarrstore import class_attrs, write_volumes

    target = paths["facies"].with_name(ZARR_STORE)
    return write_volumes(
        target, vol.geometry, paths,
        {"title": f"falsecli predict: {run} applied to {vol.source}"},
        {"facies": class_attrs(classes),
         "confidence": {"long_name": "largest softmax probability"},
         "entropy": {"long_name": "softmax entropy / log(classes)"}})


def _preview(paths: dict[str, Path], vol: Volume, classes: list[str]) -> Path:
    """``<volume>/preview.png``: the middle inline, seismic | facies | confidence."""
    from falsecli.present.figures import prediction_figure, save_figure

    i = vol.seismic.shape[0] // 2
    frame = vol.geometry.frame("inline", i)
    fig = prediction_figure(np.asarray(vol.seismic[i], dtype=np.float32).T,
                            np.load(paths["facies"], mmap_mode="r")[i].T,
                            np.load(paths["confidence"], mmap_mode="r")[i].T,
                            classes=classes, title=f"{vol.name}: {frame.title} predicted",
                            frame=frame)
    path = paths["facies"].with_name(PREVIEW_PNG)
    save_figure(fig, path)
    return path


def _statistics(paths: dict[str, Path], vol: Volume, classes: list[str], ignore_index: int
                ) -> dict[str, Any]:
    """Predicted class shares, mean confidence and entropy, and — with labels — the facies
    benchmark's metrics, in one pass over inline blocks."""
    import torch

    from falsecli.method.metrics import ConfusionMatrix

    shape = tuple(vol.seismic.shape)
    counts = np.zeros(len(classes), np.int64)
    sums = {"confidence": 0.0, "entropy": 0.0}
    cm = ConfusionMatrix(len(classes), ignore_index) if vol.labels is not None else None
    for rows in _inline_blocks(shape):
        facies = np.array(np.load(paths["facies"], mmap_mode="r")[rows])
        counts += np.bincount(facies.ravel(), minlength=len(classes))[:len(classes)]
        for key in sums:
            sums[key] += float(np.load(paths[key], mmap_mode="r")[rows].sum(dtype=np.float64))
        if cm is not None:
            labels = np.array(vol.labels[rows], dtype=np.uint8)
            cm.update(torch.from_numpy(facies), torch.from_numpy(labels))
    n = int(np.prod(shape))
    out: dict[str, Any] = {
        "class_shares": {c: round(float(k) / n, 4) for c, k in zip(classes, counts)},
        "mean_confidence": round(sums["confidence"] / n, 4),
        "mean_entropy": round(sums["entropy"] / n, 4)}
    if cm is not None:
        out["metrics"] = cm.scores(classes)
    return out


def predict(cfg: Config, workdir: Path, out: Path, *, input_path: Path | None = None,
            labels: Path | None = None, fmt: str | None = None, force: bool = False
            ) -> dict[str, Any]:
    """Apply ``predict.run``'s model to the volumes; write the results under ``out``.

    Everything that can be wrong (run, classes, input, NaN/Inf, depth, existing output) is
    checked before the first section is predicted. ``fmt``: None writes SEG-Y for SEG-Y
    input, ``segy`` always, ``npy`` never; ``zarr`` writes a Zarr store instead of SEG-Y.
    """
    from falsecli.method.inference import check_depth

    if fmt not in (None, *FORMATS):
        raise FalseCliError(f"--format {fmt}: expected npy, segy or zarr")
    if fmt == "zarr":
        from falsecli.data.zarrstore import require_zarr

        require_zarr()
    out = Path(out)
    check_out(out, force, SUMMARY_JSON, "predict")
    model, payload, model_path, device = _model(cfg, workdir)
    classes, ignore = list(payload["classes"]), int(payload["ignore_index"])
    vols = _inputs(cfg, input_path, labels)
    for vol in vols:
        volumes.validate(vol, classes, ignore)
        check_depth(vol.source, vol.seismic.shape[2], payload["config"]["model"])
    names = [v.name for v in vols]
    if len(set(names)) != len(names):
        raise FalseCliError(f"predict: two volumes are named {names}; rename one")
    from falsecli.core.runtime import bf16_autocast

    amp = bf16_autocast(device, bool(payload["config"]["train"]["amp"]))
    results = []
    with out_folder(out, "predict") as tmp, console.progress() as bar:
        for vol in vols:
            t0 = time.perf_counter()
            paths = _predict_volume(model, payload, vol, tmp / vol.name, cfg, amp, bar)
            seconds = time.perf_counter() - t0
            is_segy = Path(vol.source).suffix.lower() in SEGY_SUFFIXES
            files = list(paths.values())
            if fmt == "segy" or (fmt is None and is_segy):
                files += _write_segy(paths, vol, cfg)
            if fmt == "zarr":
                files.append(_write_zarr(paths, vol, classes, cfg["predict"]["run"]))
            files.append(_preview(paths, vol, classes))
            shape = tuple(vol.seismic.shape)
            results.append({
                "name": vol.name, "input": vol.source, "labels": vol.labels_origin
                if vol.labels is not None else None, "shape": list(shape),
                "geometry": vol.geometry.describe(), "predict_seconds": round(seconds, 3),
                "voxels_per_s": round(float(np.prod(shape)) / max(seconds, 1e-9)),
                "outputs": [str(out / vol.name / p.name) for p in files],
                **_statistics(paths, vol, classes, ignore)})
        summary = {"stage": "predict", "run": cfg["predict"]["run"], "model": str(model_path),
                   "axes": cfg["predict"]["axes"], "device": str(device), "classes": classes,
                   "volumes": results}
        write_json(tmp / SUMMARY_JSON, summary)
    outputs = [p for r in results for p in r["outputs"]] + [str(out / SUMMARY_JSON)]
    return {**summary, "path": str(out), "outputs": outputs, "lines": _lines(results)}


def _lines(results: list[dict[str, Any]]) -> list[str]:
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    lines = []
    for r in results:
        line = (f"predict {r['name']}: {' x '.join(map(str, r['shape']))} in "
                f"{r['predict_seconds']:.1f} s ({r['voxels_per_s']:,} voxels/s), mean confidence "
                f"{r['mean_confidence']:.3f}")
        if "metrics" in r:
            m = r["metrics"]
            line += (f"; pixel_acc {fmt(m['pixel_acc'])} mean_class_acc "
                     f"{fmt(m['mean_class_acc'])} miou {fmt(m['miou'])}")
        lines.append(line)
    return lines
