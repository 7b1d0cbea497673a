"""``falsecli inspect`` on the real F3 crop (SEG-Y) and on the synthetic default."""

from __future__ import annotations

import json

import numpy as np
import pytest
import segyio

import make_data
import conftest
from conftest import TINY, sets_args

CLASSES = ["upper_ns", "middle_ns", "lower_ns", "rijnland_chalk", "scruff", "zechstein"]


@pytest.fixture
def crop_args(tmp_path, f3_crop) -> tuple[list[str], np.ndarray]:
    """The F3 crop with depth-banded labels (a few ignored pixels) as data.source files,
    and also as a test volume."""
    labels = make_data.banded_labels((23, 18, 75))
    labels[0, :, :5] = 255
    path = tmp_path / "crop_labels.npy"
    np.save(path, labels)
    test = json.dumps([{"name": "crop", "seismic": str(f3_crop), "labels": str(path)}])
    args = sets_args(["data.source=files", f"data.seismic={f3_crop}", f"data.labels={path}",
                      f"data.test={test}"])
    return args, labels


def test_inspect_json_on_the_f3_crop(cli, crop_args):
    args, labels = crop_args
    result = cli("inspect", "--json", *args)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    cube = segyio.tools.cube(str(conftest.F3_CROP)).astype(np.float64)

    train = summary["volumes"][0]
    assert train["name"] == "train" and train["source"] == str(conftest.F3_CROP)
    assert train["shape"] == [23, 18, 75] and train["dtype"] == "float32"
    assert (train["min"], train["max"]) == (cube.min(), cube.max())
    assert train["ignored_pixels"] == 18 * 5
    labelled = labels[labels != 255]
    assert train["labelled_pixels"] == labelled.size
    expected = np.bincount(labelled, minlength=6) / labelled.size
    assert list(train["class_shares"]) == CLASSES
    np.testing.assert_allclose(list(train["class_shares"].values()), expected)

    # 23 inlines, 18 crosslines: indices % 5 == 0 are tracked (5 + 4), the rest train
    assert summary["sections"] == {"train": 18 + 14, "val": 5 + 4, "crop": 9, "crop:all": 23}
    keep = ~((np.arange(23)[:, None] % 5 == 0) & (np.arange(18)[None, :] % 5 == 0))
    voxels = cube[keep]
    assert summary["normalisation"]["mean"] == pytest.approx(voxels.mean(), rel=1e-9)
    assert summary["normalisation"]["std"] == pytest.approx(voxels.std(), rel=1e-9)
    assert summary["stage"] == "inspect" and summary["outputs"] == []
    with segyio.open(conftest.F3_CROP) as f:  # segyio's geometry and scaled CDP, by hand
        lines = {"inline": f.ilines, "crossline": f.xlines}
        samples, x = f.samples, f.attributes(181)[:] / 10
    geometry = train["geometry"]
    for key, values in lines.items():
        assert geometry[key] == {"first": int(values[0]), "last": int(values[-1]),
                                 "count": len(values), "step": 1}
    assert (geometry["sample_start"], geometry["sample_interval"], geometry["sample_end"],
            geometry["unit"]) == (samples[0], samples[1] - samples[0], samples[-1], "ms")
    assert geometry["cdp_x"] == [x.min(), x.max()]


def test_inspect_text_on_the_f3_crop(cli, crop_args):
    args, _ = crop_args
    result = cli("inspect", *args)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for needle in ("23 x 18 x 75", "-10239", "10827", *CLASSES, "32 train", "9 tracked val",
                   "crop: 9 tracked, 23 inlines", "normalisation",
                   "inlines 111-133 (23, step 1), crosslines 875-892 (18, step 1), time 4-300 ms "
                   "every 4 ms; CDP X 620181.9-620622.1, Y 6074232.9-6074794.5"):
        assert needle in out, needle
    assert result.stderr == ""


def test_inspect_names_the_bytes_that_form_a_grid(cli, crop_args):
    """Wrong inline/crossline bytes: one line that names the pairs forming a grid, and no
    silent switch (the command fails)."""
    args, _ = crop_args
    result = cli("inspect", *args, "--set", "data.segy.iline=5", "--set", "data.segy.xline=21")
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line and "not a regular inline/crossline grid" in line
    assert "data.segy.iline=189 xline=193 (SEG-Y rev 1) gives 23 x 18" in line


def test_inspect_synthetic_tiny(cli):
    result = cli("inspect", "--json", *sets_args([s for s in TINY if s.startswith("data.")]))
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [v["name"] for v in summary["volumes"]] == ["train", "test1"]
    assert [v["shape"] for v in summary["volumes"]] == [[16, 24, 32], [8, 24, 32]]
    for vol in summary["volumes"]:
        shares = vol["class_shares"]
        assert all(shares[c] > 0 for c in CLASSES)
        assert sum(shares.values()) == pytest.approx(1.0)
    assert summary["sections"] == {"train": 12 + 19, "val": 4 + 5, "test1": 2 + 5,
                                   "test1:all": 8}
    geometry = summary["volumes"][1]["geometry"]  # indices: no survey numbers
    assert geometry["inline"] == {"first": 0, "last": 7, "count": 8, "step": 1}
    assert (geometry["unit"], geometry["sample_start"], geometry["sample_end"]) == (
        "sample", 0, 31) and "cdp_x" not in geometry
