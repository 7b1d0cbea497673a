"""``falsecli export``: a run's heat maps as volume-shaped SEG-Y, to overlay the seismic.

For every volume with tracked sections (``train`` for the validation sections, a test
volume's name for its tracked sections) it writes ``--out DIR/<volume>/forgetting.sgy``,
``switch.sgy`` and ``never_learned.sgy``: IEEE-float cubes with the volume's geometry — its
own textual, binary and trace headers when it was read from SEG-Y, else the regular grid of
``synth --format segy``. Traces on no tracked section are 0. A trace where a tracked inline
and a tracked crossline cross lies on both sections and holds the larger of their two
counts (never-learned: 1 if either marks it), so a hot spot is never hidden. Like
``predict``, the folder is built beside ``DIR`` and renamed into place; ``DIR/export.json``
summarises it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core.config import Config
from falsecli.core.errors import FalseCliError
from falsecli.core.files import atomic_dir, write_json
from falsecli.core.manifest import Stage
from falsecli.data import segy, volumes
from falsecli.data.volumes import Volume
from falsecli.method.history import TrackedSection
from falsecli.stages.heatmap import MAPS, load_heatmap
from falsecli.stages.predict import BLOCK_SAMPLES, check_out

#: the summary of an export folder
SUMMARY_JSON = "export.json"
#: the heat maps of one volume as a Zarr store (``--format zarr``), for xarray
ZARR_STORE = "heatmaps.zarr"
FORMATS = ("segy", "zarr")


def volume_map(shape: tuple[int, int, int], sections: list[TrackedSection],
               images: dict[str, np.ndarray], rows: slice) -> np.ndarray:
    """Inlines ``rows`` (k, crosslines, depth) float32 of a volume-shaped map: each tracked
    section's image at its place, the larger value where two cross, 0 elsewhere."""
    block = np.zeros((rows.stop - rows.start, *shape[1:]), np.float32)
    for s in sections:
        image = np.asarray(images[s.name], dtype=np.float32)  # [depth, width]
        if s.axis == "inline":
            if rows.start <= s.index < rows.stop:
                np.maximum(block[s.index - rows.start], image.T, out=block[s.index - rows.start])
        else:
            np.maximum(block[:, s.index], image[:, rows].T, out=block[:, s.index])
    return block


def _write(path: Path, vol: Volume, sections: list[TrackedSection],
           images: dict[str, np.ndarray], segy_bytes: dict[str, int], title: str) -> None:
    shape = tuple(vol.seismic.shape)
    if isinstance(vol.seismic, segy.SegyVolume):
        writer = segy.create_like(path, vol.seismic.survey)
    else:
        writer = segy.create_regular(path, shape, segy_bytes["iline"], segy_bytes["xline"],
                                     title=title)
    step = max(1, BLOCK_SAMPLES // max(shape[1] * shape[2], 1))
    with writer as w:
        for start in range(0, shape[0], step):
            rows = slice(start, min(start + step, shape[0]))
            w.write(start, volume_map(shape, sections, images, rows))


def _write_zarr(path: Path, vol: Volume, sections: list[TrackedSection],
                maps: dict[str, dict[str, np.ndarray]], title: str) -> None:
    """The maps of ``vol`` (name -> section images) as one Zarr store on its survey axes."""
    from falsecli.data.zarrstore import ZarrCube

    shape = tuple(vol.seismic.shape)
    cube = ZarrCube(path, vol.geometry, dict.fromkeys(maps, np.float32), {"title": title})
    for start in range(0, shape[0], cube.step):
        rows = slice(start, min(start + cube.step, shape[0]))
        for name, images in maps.items():
            cube.write(name, start, volume_map(shape, sections, images, rows))
    cube.close()


def export(cfg: Config, workdir: Path, out: Path, *, fmt: str = "segy", force: bool = False
           ) -> dict[str, Any]:
    """Write the heat maps of ``heatmap.run`` as SEG-Y cubes (or one Zarr store per volume,
    ``fmt='zarr'``) under ``out``."""
    if fmt not in FORMATS:
        raise FalseCliError(f"--format {fmt}: expected segy or zarr")
    if fmt == "zarr":
        from falsecli.data.zarrstore import require_zarr

        require_zarr()
    out = Path(out)
    check_out(out, force, SUMMARY_JSON, "export")
    run = cfg["heatmap"]["run"]
    maps = load_heatmap(Path(workdir), run, for_stage="export")
    data = Stage(Path(workdir), run).require("export")["config"]["data"]
    train, tests = volumes.load(data, lazy=True)
    by_split: dict[str, list[TrackedSection]] = defaultdict(list)
    for s in maps.tracking.sections:
        by_split[s.split].append(s)
    vols = {"val": train, **{t.name: t for t in tests}}
    for split, secs in by_split.items():
        vol = vols.get(split)
        if vol is None:
            raise FalseCliError(f"export: the tracked sections of '{split}' belong to no volume "
                                f"of {run}'s data any more — restore the data or retrain")
        for s in secs:
            n = vol.seismic.shape[0 if s.axis == "inline" else 1]
            if s.index >= n or s.shape != (vol.seismic.shape[2], vol.seismic.shape[
                    1 if s.axis == "inline" else 0]):
                raise FalseCliError(f"export: section {s.name} does not fit {vol.source} "
                                    f"(shape {tuple(vol.seismic.shape)}) — the data changed "
                                    "since training; restore it or retrain")
    outputs, written = [], {}
    with atomic_dir(out) as tmp:
        for split, secs in by_split.items():
            vol = vols[split]
            images = {key: maps.tracking.images(getattr(maps, key)) for key, _ in MAPS.values()}
            if fmt == "zarr":
                _write_zarr(tmp / vol.name / ZARR_STORE, vol, secs, images,
                            f"falsecli export: forgetting events of {run} ({vol.name})")
                files = [ZARR_STORE]
            else:
                files = [Path(file).with_suffix(".sgy").name for file in MAPS]
                for name, key in zip(files, images):
                    _write(tmp / vol.name / name, vol, secs, images[key], data["segy"],
                           f"falsecli export: {key} events of {run} ({vol.name})")
            outputs += [str(out / vol.name / name) for name in files]
            written[vol.name] = {"sections": len(secs), "files": files,
                                 "geometry": vol.geometry.describe()}
        summary = {"stage": "export", "run": run, "epochs": maps.epochs,
                   "never_learned": maps.never_learned_mode, "crossings": "max",
                   "volumes": written}
        write_json(tmp / SUMMARY_JSON, summary)
    outputs.append(str(out / SUMMARY_JSON))
    line = (f"export: {len(maps.tracking.sections)} tracked sections of {run} as "
            f"{'Zarr' if fmt == 'zarr' else 'SEG-Y'} in {out}")
    return {**summary, "path": str(out), "outputs": outputs, "lines": [line]}
