"""``falsecli export``: a run's heat maps as volume-shaped SEG-Y, to overlay the seismic.

For every volume with tracked sections (``train`` for the validation sections, a test
volume's name for its tracked sections) it writes ``--out DIR/<volume>/forgetting.sgy``,
``switch.sgy``, ``never_learned.sgy`` and, when the heat maps include data maps,
``label_issues.sgy`` (1 on the likely label issues): IEEE-float cubes with the volume's geometry — its
own textual, binary and trace headers when it was read from SEG-Y, else the regular grid of
``synth --format segy``. Traces on no tracked section are 0. A trace where a tracked inline
and a tracked crossline cross lies on both sections and holds the larger of their two
counts (never-learned: 1 if either marks it), so a hot spot is never hidden. Like
``predict``, the folder is built beside ``DIR`` and swapped into place
(:func:`~falsecli.core.swap.out_folder`); ``DIR/export.json`` summarises it. ``--format
zarr`` writes the same maps as the variables of one Zarr store per volume
(``DIR/<volume>/heatmaps.zarr``) on the volume's survey coordinates.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core import layout
from falsecli.core.config import Config
from falsecli.core.errors import FalseCliError
from falsecli.core.files import write_json
from falsecli.core.manifest import Stage
from falsecli.core.swap import out_folder
from falsecli.data import segy, volumes
from falsecli.data.volumes import Volume
from falsecli.method.history import TrackedSection
from falsecli.stages.datamaps import has_issue_mask, load_issue_mask
from falsecli.stages.heatmap import MAPS, load_heatmap
from falsecli.stages.predict import BLOCK_SAMPLES, check_out

#: the summary of an export folder
SUMMARY_JSON = "export.json"
#: the heat maps of one volume as a Zarr store (``--format zarr``), for xarray
ZARR_STORE = "heatmaps.zarr"
FORMATS = ("segy", "zarr")
#: the likely label issues (1) of the data maps, beside the heat maps
ISSUES_SGY = "label_issues.sgy"


def _issue_mask(workdir: Path, run: str, tracking: Any) -> dict[str, np.ndarray] | None:
    """The heatmap stage's label-issue mask per section, None when it drew no data maps
    (a run trained before them)."""
    folder = Stage(workdir, layout.heatmap_folder(run)).path
    if not has_issue_mask(folder):
        return None
    return tracking.images(load_issue_mask(folder, tracking).astype(np.float32))


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


def _write_volume(folder: Path, vol: Volume, sections: list[TrackedSection],
                  cubes: dict[str, tuple[str, dict[str, np.ndarray]]], fmt: str,
                  segy_bytes: dict[str, int], run: str) -> list[str]:
    """The maps of one volume in ``folder``: one SEG-Y per map (``cubes``: file name ->
    (what, section images)), or one Zarr store holding them all; returns the file names."""
    if fmt == "zarr":
        _write_zarr(folder / ZARR_STORE, vol, sections,
                    {Path(n).stem: images for n, (_, images) in cubes.items()},
                    f"falsecli export: heat maps of {run} ({vol.name})")
        return [ZARR_STORE]
    for name, (key, images) in cubes.items():
        _write(folder / name, vol, sections, images, segy_bytes,
               f"falsecli export: {key} of {run} ({vol.name})")
    return list(cubes)


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
    cubes = {Path(file).with_suffix(".sgy").name:
             (f"{key} events", maps.tracking.images(getattr(maps, key)))
             for file, (key, _) in MAPS.items()}
    issues = _issue_mask(Path(workdir), run, maps.tracking)
    if issues is not None:
        cubes[ISSUES_SGY] = ("likely label issue", issues)
    outputs, written = [], {}
    with out_folder(out, "export") as tmp:
        for split, secs in by_split.items():
            vol = vols[split]
            files = _write_volume(tmp / vol.name, vol, secs, cubes, fmt, data["segy"], run)
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
