"""Survey geometry carried to every output: the CSVs' inline/crossline numbers, the Zarr
stores of ``predict``/``export --format zarr`` against their SEG-Y twins, and the real F3
crop end to end (line numbers and times in every output).

One tiny model is trained per module on the synthetic volume stored as SEG-Y with survey
numbers (inlines step 2 from 1001, crosslines step 3 from 2001, shuffled, CDP X/Y in cm with
scalar -100, first sample at 8 ms: tests/make_segy.py), so every number differs from an
index.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import segyio

import make_data
import make_segy
from conftest import TINY, sets_args, shared
from test_predict import invoke
from falsecli.core import config
from falsecli.data import synthetic



@pytest.fixture
def xr():
    """xarray, for the Zarr tests (they skip where the zarr extra is not installed)."""
    pytest.importorskip("zarr", reason="the zarr extra (zarr, xarray) is not installed")
    return pytest.importorskip("xarray", reason="the zarr extra (zarr, xarray) is not "
                                                "installed")


def survey_ilines(n: int) -> list[int]:
    """The inline numbers of a volume with ``n`` inlines (tests/make_segy.py's survey)."""
    return [1001 + 2 * i for i in range(n)]


def survey_xlines(n: int) -> list[int]:
    """The crossline numbers of a volume with ``n`` crosslines."""
    return [2001 + 3 * j for j in range(n)]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, object]:
    """A workdir trained (2 epochs) on the surveyed SEG-Y volumes, with heatmap and rank."""
    root = shared(tmp_path_factory.mktemp("survey"))
    cfg = config.resolve(sets=TINY)
    (seis, lab), (test_seis, test_lab) = synthetic.volumes(cfg["data"])
    paths = {}
    for name, vol in (("train", seis), ("test", test_seis)):
        ii, jj = np.meshgrid(np.arange(vol.shape[0]), np.arange(vol.shape[1]), indexing="ij")
        order = np.random.default_rng(3).permutation(ii.size)
        ii, jj = ii.ravel()[order], jj.ravel()[order]
        paths[name] = make_segy.traces(root / f"{name}.sgy", vol[ii, jj], 1001 + 2 * ii,
                                       2001 + 3 * jj, fields=make_segy.survey_fields(ii, jj))
    np.save(root / "train_labels.npy", lab)
    sets = [*TINY, "train.epochs=2", "data.source=files", f"data.seismic={paths['train']}",
            f"data.labels={root / 'train_labels.npy'}",
            f"data.test=[{{name: test1, seismic: {paths['test']}, labels: null}}]"]
    w = root / "w"
    for cmd in ("train", "heatmap", "rank"):
        result = invoke(cmd, "-w", w, *sets_args(sets), "-q")
        assert result.exit_code == 0, result.output
    return {"w": w, "flags": sets_args(sets), "test_sgy": paths["test"], "shape": seis.shape,
            "test_shape": test_seis.shape}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _expected_numbers(name: str, shape: tuple[int, ...]) -> tuple[str, str]:
    """(inline, crossline) columns of a section named ``inline_0005``/``crossline_0010``."""
    axis, index = name.rsplit("_", 1)
    if axis.endswith("inline") and not axis.endswith("crossline"):
        return str(survey_ilines(shape[0])[int(index)]), ""
    return "", str(survey_xlines(shape[1])[int(index)])


def test_csvs_carry_the_survey_numbers(work) -> None:
    w = Path(work["w"])
    ranked = _rows(w / "rank" / "ranking.csv")
    summary = _rows(w / "heatmap" / "summary.csv")
    assert ranked and summary
    for row in ranked + [r for r in summary if r["split"] == "val"]:
        assert (row["inline"], row["crossline"]) == _expected_numbers(row["section"],
                                                                      work["shape"])
    for row in (r for r in summary if r["split"] == "test1"):
        assert (row["inline"], row["crossline"]) == _expected_numbers(
            row["section"].removeprefix("test1_"), work["test_shape"])


def _by_trace(xr, store: Path, var: str, sgy: Path) -> tuple[np.ndarray, np.ndarray, object]:
    """The store's ``var`` at every SEG-Y trace's inline/crossline, and the traces."""
    ds = xr.open_zarr(store)
    with segyio.open(sgy, ignore_geometry=True) as f:
        il, xl = f.attributes(189)[:], f.attributes(193)[:]
        traces = f.trace.raw[:]
        samples = f.samples
    at = ds[var].sel(iline=xr.DataArray(il, dims="t"), xline=xr.DataArray(xl, dims="t"))
    np.testing.assert_array_equal(ds["twt"].values, samples)
    return at.values, traces, ds


def test_predict_zarr_matches_the_segy_output(xr, work, tmp_path) -> None:
    base = ["predict", "-w", work["w"], *work["flags"]]
    assert invoke(*base, "--out", tmp_path / "sgy").exit_code == 0
    result = invoke(*base, "--out", tmp_path / "zarr", "--format", "zarr", "--json")
    assert result.exit_code == 0, result.output
    store = tmp_path / "zarr" / "test1" / "prediction.zarr"
    assert str(store) in json.loads(result.stdout)["outputs"]
    assert not (tmp_path / "zarr" / "test1" / "facies.sgy").exists()
    for var in ("facies", "confidence", "entropy"):
        values, traces, ds = _by_trace(xr, store, var,
                                       tmp_path / "sgy" / "test1" / f"{var}.sgy")
        np.testing.assert_array_equal(values.astype(np.float32), traces)
    assert ds["facies"].dtype == np.uint8 and ds["facies"].dims == ("iline", "xline", "twt")
    assert ds["facies"].attrs["flag_meanings"].split() == config.load_defaults()["data"][
        "classes"]
    assert ds["iline"].values.tolist() == survey_ilines(work["test_shape"][0])
    assert ds["twt"].values[0] == make_segy.DELAY_MS and ds["twt"].attrs["units"] == "ms"
    with segyio.open(work["test_sgy"], ignore_geometry=True) as f:  # CDP X by hand: cm
        il, xl, x = f.attributes(189)[:], f.attributes(193)[:], f.attributes(181)[:]
    at = ds["cdp_x"].sel(iline=xr.DataArray(il, dims="t"), xline=xr.DataArray(xl, dims="t"))
    np.testing.assert_allclose(at.values, x / 100)


def test_export_zarr_matches_the_segy_export(xr, work, tmp_path) -> None:
    base = ["export", "-w", work["w"], *work["flags"]]
    assert invoke(*base, "--out", tmp_path / "sgy").exit_code == 0
    assert invoke(*base, "--out", tmp_path / "zarr", "--format", "zarr").exit_code == 0
    store = tmp_path / "zarr" / "train" / "heatmaps.zarr"
    for var in ("forgetting", "switch", "never_learned"):
        values, traces, _ = _by_trace(xr, store, var,
                                      tmp_path / "sgy" / "train" / f"{var}.sgy")
        np.testing.assert_array_equal(values, traces)
        assert traces.any() or var == "never_learned"


def test_npy_input_has_index_coordinates(xr, work, tmp_path) -> None:
    src = tmp_path / "vol.npy"
    np.save(src, make_data.seismic((4, 9, 32)))
    out = tmp_path / "pred"
    assert invoke("predict", "-w", work["w"], *work["flags"], "--out", out, "--input", src,
                  "--format", "zarr").exit_code == 0
    ds = xr.open_zarr(out / "vol" / "prediction.zarr")
    assert ds["facies"].dims == ("iline", "xline", "sample") and "cdp_x" not in ds.coords
    assert ds["iline"].values.tolist() == [0, 1, 2, 3] and ds["sample"].values[-1] == 31
    np.testing.assert_array_equal(ds["facies"].values, np.load(out / "vol" / "facies.npy"))


def test_the_f3_crop_end_to_end(work, tmp_path, f3_crop) -> None:
    """The real crop predicted by the model trained on the synthetic volume: its line numbers
    and times in predict.json and in the SEG-Y outputs' headers."""
    result = invoke("predict", "-w", work["w"], *work["flags"], "--input", f3_crop,
                    "--out", tmp_path, "--force", "--json")
    assert result.exit_code == 0, result.output
    geometry = json.loads(result.stdout)["volumes"][0]["geometry"]
    assert geometry["inline"] == {"first": 111, "last": 133, "count": 23, "step": 1}
    assert geometry["crossline"] == {"first": 875, "last": 892, "count": 18, "step": 1}
    assert (geometry["sample_start"], geometry["sample_interval"], geometry["sample_end"],
            geometry["unit"]) == (4.0, 4.0, 300.0, "ms")
    for name in ("facies", "confidence", "entropy"):
        with segyio.open(tmp_path / "f3-crop" / f"{name}.sgy") as f:
            assert f.ilines.tolist() == list(range(111, 134))
            assert f.xlines.tolist() == list(range(875, 893))
            assert f.samples.tolist() == [4.0 * k for k in range(1, 76)]
    assert (tmp_path / "f3-crop" / "preview.png").stat().st_size > 0


def test_the_f3_crop_as_zarr(xr, work, tmp_path, f3_crop) -> None:
    base = ["predict", "-w", work["w"], *work["flags"], "--input", f3_crop]
    assert invoke(*base, "--out", tmp_path / "sgy").exit_code == 0
    assert invoke(*base, "--out", tmp_path / "zarr", "--format", "zarr").exit_code == 0
    values, traces, ds = _by_trace(xr, tmp_path / "zarr" / "f3-crop" / "prediction.zarr",
                                   "facies", tmp_path / "sgy" / "f3-crop" / "facies.sgy")
    np.testing.assert_array_equal(values.astype(np.float32), traces)
    assert ds["iline"].values.tolist() == list(range(111, 134))
    assert ds["xline"].values.tolist() == list(range(875, 893))
    assert ds["twt"].values.tolist() == [4.0 * k for k in range(1, 76)]
    with segyio.open(f3_crop) as f:
        np.testing.assert_allclose(ds["cdp_y"].values,
                                   f.attributes(185)[:].reshape(23, 18) / 10)


def test_the_report_names_sections_by_survey_line(work, tmp_path) -> None:
    w = tmp_path / "w"
    shutil.copytree(work["w"], w)
    result = invoke("report", "-w", w, *work["flags"], "-q")
    assert result.exit_code == 0, result.output
    text = (w / "report" / "report.md").read_text()
    top = _rows(w / "rank" / "ranking.csv")[0]
    il, xl = _expected_numbers(top["section"], work["shape"])
    named = f"inline {il} ({top['section']})" if il else f"crossline {xl} ({top['section']})"
    assert named in text
