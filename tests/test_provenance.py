"""What a run was trained and tracked on: the strict holdout, the fingerprint every run
records, and retraining refused on other data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, sets_args
from typer.testing import CliRunner

import make_data
from falsecli.cli import app
from falsecli.core import config
from falsecli.data.dataset import load_dataset
from falsecli.data.provenance import array_digest, data_fingerprint, differences


@pytest.mark.parametrize("holdout", ["crossing", "strict"])
def test_strict_holdout_never_trains_on_a_tracked_pixel(holdout: str) -> None:
    ds = load_dataset(config.resolve(sets=[*TINY, f"data.holdout={holdout}"]))
    tracked = {(s.axis, s.index) for s in ds.sections("val")}
    seen_tracked = 0
    for s in ds.sections("train"):
        labels, raw = ds.label(s), ds.volumes["train"].section(ds.train.labels, s.axis, s.index)
        other = "crossline" if s.axis == "inline" else "inline"
        for col in range(s.shape[1]):
            on_tracked = (other, col) in tracked  # this column is a voxel column of val
            labelled = (labels[:, col] != ds.ignore_index).any()
            if holdout == "strict":
                assert not (on_tracked and labelled), (s.name, col)
                if not on_tracked:
                    assert np.array_equal(labels[:, col], raw[:, col])
            else:
                assert np.array_equal(labels[:, col], raw[:, col])
            seen_tracked += on_tracked and labelled
    if holdout == "crossing":  # the paper's protocol: tracked pixels are trained on
        assert seen_tracked > 0
    val = ds.sections("val")[0]
    assert np.array_equal(ds.label(val), ds.volumes["train"].section(ds.train.labels, val.axis,
                                                                    val.index))


def test_fingerprint_names_what_differs() -> None:
    a = data_fingerprint(load_dataset(config.resolve(sets=TINY)))
    b = data_fingerprint(load_dataset(config.resolve(sets=[*TINY, "data.synthetic.seed=5"])))
    c = data_fingerprint(load_dataset(config.resolve(sets=[*TINY, "data.holdout=strict"])))
    assert differences(a, a) == []
    # another seed: other volumes, same shapes, classes and rules
    assert {d.split(" ")[0] for d in differences(a, b)} == {
        "volumes.train.seismic", "volumes.train.labels", "volumes.test1.seismic",
        "volumes.test1.labels"}
    assert differences(a, c) == ["holdout crossing -> strict"]
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert array_digest(x) == array_digest(x.copy()) != array_digest(x.astype(np.float64))


def test_retrain_refuses_data_changed_on_disk(tmp_path) -> None:
    seismic, labels = make_data.npy_pair(tmp_path / "data", shape=(10, 10, 16))
    work = tmp_path / "w"
    args = ["-w", str(work), "--quiet", *sets_args([*TINY, "data.source=files",
                                                   f"data.seismic={seismic}",
                                                   f"data.labels={labels}", "train.epochs=1"])]
    runner = CliRunner()
    assert runner.invoke(app, ["train", *args]).exit_code == 0
    manifest = json.loads((work / "train" / "manifest.json").read_text())
    assert manifest["fingerprint"]["epochs"] == 1 and manifest["steps_per_epoch"] >= 1
    changed = np.load(labels)
    changed[1, 1, :4] = (changed[1, 1, :4] + 1) % make_data.N_CLASSES
    np.save(labels, changed)  # same path, other content: only the fingerprint sees it
    result = runner.invoke(app, ["retrain", "--aug", "none", "--seeds", "1", *args])
    assert result.exit_code == 1
    assert "the data differ from those train/ was trained on" in result.stderr
    assert "volumes.train.labels" in result.stderr
    assert not (work / "retrain" / "none" / "seed1" / "manifest.json").exists()
