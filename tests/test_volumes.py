"""Loading (synthetic, f3, files), validation, and the synth -> f3 round trip."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import make_data
import make_segy
from conftest import TINY, sets_args, shared
from falsecli.core import config
from falsecli.core.errors import FalseCliError
from falsecli.data import dataset as data, synthetic, volumes

SYNTH_TINY = [s for s in TINY if s.startswith("data.")]


def data_cfg(**keys: object) -> dict:
    """The resolved data section of the tiny profile with ``keys`` of ``data`` set."""
    return config.resolve(sets=[*SYNTH_TINY, *(f"data.{k}={json.dumps(v)}"
                                               for k, v in keys.items())])["data"]


def files_args(seismic: Path, labels: Path) -> list[str]:
    return ["--set", "data.source=files", "--set", f"data.seismic={seismic}",
            "--set", f"data.labels={labels}"]


def assert_one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 1, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- synth -> f3 round trip


@pytest.mark.parametrize("fmt, ext", [("npy", ".npy"), ("segy", ".sgy")])
def test_synth_then_f3_reads_the_same_volumes(cli, tmp_path, fmt, ext):
    out = tmp_path / "f3"
    result = cli("synth", "--out", out, "--format", fmt, "--json", *sets_args(SYNTH_TINY))
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    expected = [out / "train" / f"train_seismic{ext}", out / "train" / "train_labels.npy",
                out / "test_once" / f"test1_seismic{ext}", out / "test_once" / "test1_labels.npy"]
    assert summary["stage"] == "synth" and summary["outputs"] == [str(p) for p in expected]
    assert summary["shape"] == [16, 24, 32] and summary["test_shape"] == [8, 24, 32]
    assert all(p.is_file() for p in expected)

    (seis, lab), (test_seis, test_lab) = synthetic.volumes(data_cfg())
    train, tests = volumes.load(data_cfg(source="f3", root=str(out)))
    assert [t.name for t in tests] == ["test1"]
    if fmt == "npy":
        assert isinstance(train.seismic, np.memmap) and train.seismic.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(train.seismic, np.float32), seis)
    np.testing.assert_array_equal(np.asarray(tests[0].seismic, np.float32), test_seis)
    np.testing.assert_array_equal(train.labels, lab)
    np.testing.assert_array_equal(tests[0].labels, test_lab)
    assert train.labels.dtype == np.uint8
    assert train.source == str(expected[0]) and train.labels_source == str(expected[1])


def test_synth_refuses_to_overwrite_without_force(cli, tmp_path):
    args = ["synth", "--out", tmp_path, *sets_args(SYNTH_TINY)]
    assert cli(*args).exit_code == 0
    before = (tmp_path / "train" / "train_labels.npy").stat().st_mtime_ns
    assert_one_line_error(cli(*args), str(tmp_path / "train" / "train_seismic.npy"), "--force")
    assert (tmp_path / "train" / "train_labels.npy").stat().st_mtime_ns == before
    assert cli(*args, "--force").exit_code == 0
    # another format: the old .npy seismic would shadow the new .sgy, so it is refused too,
    # and replaced with --force
    segy_args = [*args, "--format", "segy"]
    assert_one_line_error(cli(*segy_args), str(tmp_path / "train" / "train_labels.npy"))
    assert cli(*segy_args, "--force").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [
        "train_labels.npy", "train_seismic.sgy"]


def test_relative_paths_start_in_the_cwd(tmp_path, monkeypatch):
    make_data.npy_pair(tmp_path / "d", "v")
    monkeypatch.chdir(tmp_path)
    train, tests = volumes.load(data_cfg(source="files", seismic="d/v_seismic.npy",
                                         labels="d/v_labels.npy"))
    assert train.seismic.shape == make_data.SHAPE and tests == []


def test_files_source_with_test_volumes(tmp_path):
    s, lab = make_data.npy_pair(tmp_path, "train")
    t2 = make_segy.cube(tmp_path / "t2.sgy", make_data.seismic((3, 7, 10)))
    d = data_cfg(source="files", seismic=str(s), labels=str(lab),
                 test=[{"name": "blind", "seismic": str(s), "labels": str(lab)},
                       {"name": "far", "seismic": str(t2), "labels": None}])
    train, tests = volumes.load(d)
    assert [t.name for t in tests] == ["blind", "far"]
    assert tests[1].labels is None and tests[1].seismic.shape == (3, 7, 10)
    with pytest.raises(FalseCliError, match="used twice"):
        volumes.load({**d, "test": [d["test"][0], d["test"][0]]})
    with pytest.raises(FalseCliError, match=r"data.test\[0\]: seismic must be a .npy or SEG-Y"):
        volumes.load({**d, "test": [{"name": "x", "seismic": 5, "labels": None}]})


def test_read_array_segy_seismic_labels_and_errors(tmp_path):
    """SEG-Y by suffix (any case): seismic as float32, labels as uint8, and the reader's
    errors for files that are no post-stack cube."""
    segy_bytes = data_cfg()["segy"]
    seis = make_segy.odd_step(tmp_path / "seis.sgy")
    out = volumes.read_array(seis, segy_bytes)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, make_segy.volume())
    labels = make_data.banded_labels(make_data.SHAPE)
    path = make_segy.cube(tmp_path / "labels.SEGY", labels, fmt=make_segy.INT16)
    out = volumes.read_array(path, segy_bytes, labels=True)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, labels)
    for case, message in [("unstructured", "not a regular inline/crossline grid"),
                          ("prestack", "prestack")]:
        path = make_segy.BAD[case](tmp_path / f"{case}.sgy")
        with pytest.raises(FalseCliError, match=f"^{re.escape(str(path))}: {message}"):
            volumes.read_array(path, segy_bytes)


def test_dataset_from_f3_layout(tmp_path):
    make_data.npy_pair(tmp_path / "train", "train", shape=(6, 7, 10))
    make_data.npy_pair(tmp_path / "test_once", "test2", shape=(2, 7, 10))
    cfg = config.resolve(sets=["data.source=f3", f"data.root={tmp_path}"])
    ds = data.load_dataset(cfg)
    assert [t.name for t in ds.tests] == ["test2"]
    img = ds.image(ds.sections("train")[0])
    assert img.dtype == np.float32 and img.shape == (10, 7)


def test_tracked_splits_once_each_and_unlabelled_sections(tmp_path):
    """A repeated split is tracked once (val stays one contiguous run); an unknown one is a
    config error; an unlabelled test volume's sections are labelled all ignore_index."""
    s, lab = make_data.npy_pair(tmp_path, "train")
    d = data_cfg(source="files", seismic=str(s), labels=str(lab),
                 test=[{"name": "far", "seismic": str(s), "labels": None}])
    ds = data.load_dataset({"data": d})
    val, far = ds.sections("val"), ds.sections("far")
    assert ds.tracked(["val", "far", "val"]) == val + far
    assert ds.tracked(["far", "far"]) == far
    for split in ("train", "far:all", "test1"):
        with pytest.raises(FalseCliError, match=f"'train.track' names '{split}'; .*val, pool, far"):
            ds.tracked(["val", split])
    sec = far[0]
    assert np.array_equal(ds.label(sec), np.full(sec.shape, 255, np.uint8))
    same = [x for x in val if x.shape == val[0].shape]
    images, labels = ds.stack(same)
    assert images.dtype == np.float32 and labels.dtype == np.uint8
    assert np.array_equal(images, np.stack([ds.image(x) for x in same]))
    assert np.array_equal(labels, np.stack([ds.label(x) for x in same]))


# ---------------------------------------------------------------- bad inputs, through the CLI


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Path]:
    return make_data.write_all(shared(tmp_path_factory.mktemp("cases")))


@pytest.mark.parametrize("seismic, labels, needles", [
    ("missing", "good_labels", ["missing"]),
    ("empty_npy", "good_labels", ["empty file"]),
    ("truncated_npy", "good_labels", ["not a readable .npy array"]),
    ("not3d", "good_labels", ["shape (7, 10) (2-D)", "3-D"]),
    ("nan", "good_labels", ["NaN/Inf", "inline index 4, crossline 2, sample 7"]),
    ("inf", "good_labels", ["NaN/Inf", "inline index 1, crossline 1, sample 1"]),
    ("good_seismic", "bad_labels", ["label values 7, 9", "6 classes", "ignore_index 255"]),
    ("good_seismic", "short_labels", ["(6, 7, 9) differs from the seismic shape (6, 7, 10)"]),
    ("good_seismic", "empty_npy", ["empty file"]),
])
def test_bad_input_is_one_line_naming_the_file(cli, cases, tmp_path, seismic, labels, needles):
    paths = {**cases, "missing": tmp_path / "nowhere" / "seismic.npy"}
    result = cli("inspect", *files_args(paths[seismic], paths[labels]))
    bad = paths[labels] if seismic.startswith("good") else paths[seismic]
    assert_one_line_error(result, str(bad), *needles)


def test_labels_error_follows_the_class_list(cli, cases):
    args = files_args(cases["good_seismic"], cases["bad_labels"])
    line = assert_one_line_error(cli("inspect", *args, "--set", "data.classes=[a,b,c,d,e,f,g,h]"),
                                 "label values 9 ", "8 classes (0..7)")
    assert "7," not in line
    ok = cli("inspect", *args, "--set", "data.classes=[a,b,c,d,e,f,g,h]",
             "--set", "data.ignore_index=9")
    assert ok.exit_code == 0, ok.stderr


@pytest.mark.parametrize("sets, needles", [
    (["data.source=f3"], ["data.root is not set"]),
    (["data.source=f3", "data.root=/nonexistent/f3"], ["/nonexistent/f3", "no such folder"]),
    (["data.source=files"], ["data.seismic is not set"]),
    (["data.source=files", "data.seismic=a.txt", "data.labels=b.npy"],
     ["a.txt", "unsupported file type '.txt'"]),
    (["data.val_every=0"], ["'data.val_every' is 0", ">= 2"]),
])
def test_config_errors(cli, sets, needles):
    assert_one_line_error(cli("inspect", *sets_args(sets)), *needles)


def test_f3_root_without_train_volume(cli, tmp_path):
    (tmp_path / "train").mkdir()
    assert_one_line_error(cli("inspect", "--set", "data.source=f3", "--set",
                              f"data.root={tmp_path}"),
                          str(tmp_path / "train" / "train_seismic.npy"), "missing")


# ---------------------------------------------------------------- validation walks blocks


def test_validation_scans_every_block(monkeypatch):
    monkeypatch.setattr(volumes, "BLOCK_SAMPLES", 70)     # one inline per block
    seis = make_data.seismic()
    seis[5, 6, 9] = -np.inf                               # the very last sample
    labels = make_data.banded_labels(make_data.SHAPE).astype(np.int64)
    vol = volumes.Volume("train", seis, labels, "s.npy", "l.npy")
    with pytest.raises(FalseCliError, match=r"^s\.npy: .*1 in inlines 5..5, first at inline "
                                            r"index 5, crossline 6, sample 9"):
        volumes.validate(vol, list("abcdef"), 255)
    seis[5, 6, 9] = 0.0
    labels[5, 6, 9] = -3
    with pytest.raises(FalseCliError, match=r"^l\.npy: label values -3 are outside"):
        volumes.validate(vol, list("abcdef"), 255)
    labels[5, 6, 9] = 255
    volumes.validate(vol, list("abcdef"), 255)
    counts = volumes.label_counts(labels)
    assert counts[255] == 1 and sum(counts.values()) == labels.size
    assert counts == dict(zip(*(a.tolist() for a in np.unique(labels, return_counts=True))))


def test_float_labels_must_be_integers():
    seis = make_data.seismic()
    labels = make_data.banded_labels(make_data.SHAPE).astype(np.float32)
    vol = volumes.Volume("train", seis, labels, "s.npy", "l.npy")
    volumes.validate(vol, list("abcdef"), 255)
    labels[0, 0, 0] = 0.5
    with pytest.raises(FalseCliError, match=re.escape("l.npy: the labels hold non-integer")):
        volumes.validate(vol, list("abcdef"), 255)
