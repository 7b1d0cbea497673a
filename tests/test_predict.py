"""``falsecli predict`` and ``falsecli export``: whole-volume prediction, SEG-Y with the
survey's headers, heat maps as SEG-Y cubes, and the one-line refusals.

One tiny model is trained per module on a synthetic volume stored as SEG-Y with the odd-step
geometry of tests/make_segy.py (inlines step 2 from 1001, crosslines step 3 from 2001,
crossline-sorted and shuffled), so the header copying is covered without ../shared.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import segyio
import torch
from typer.testing import CliRunner

import make_data
import make_segy
from conftest import TINY, sets_args, shared
from falsecli.cli import app
from falsecli.core import config
from falsecli.core.runtime import bf16_autocast
from falsecli.data import segy, synthetic
from falsecli.method.inference import probabilities, scores, sweep
from falsecli.method.model import load_model
from falsecli.method.training import predict as predict_ids

ODD = {"il0": 1001, "xl0": 2001, "il_step": 2, "xl_step": 3}
#: trace-header fields an interpreter's software places a trace by
PLACED = (segyio.TraceField.INLINE_3D, segyio.TraceField.CROSSLINE_3D,
          segyio.TraceField.CDP_X, segyio.TraceField.CDP_Y,
          segyio.TraceField.TRACE_SAMPLE_INTERVAL)


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, object]:
    """A workdir trained (2 epochs) on SEG-Y volumes, and its --set flags."""
    root = shared(tmp_path_factory.mktemp("predict"))
    cfg = config.resolve(sets=TINY)
    (seis, lab), (test_seis, test_lab) = synthetic.volumes(cfg["data"])
    train_sgy = make_segy.cube(root / "train.sgy", seis, order="crossline", seed=1, **ODD)
    test_sgy = make_segy.cube(root / "test.sgy", test_seis, **ODD)
    np.save(root / "train_labels.npy", lab)
    np.save(root / "test_labels.npy", test_lab)
    sets = [*TINY, "train.epochs=2", "data.source=files", f"data.seismic={train_sgy}",
            f"data.labels={root / 'train_labels.npy'}",
            f"data.test=[{{name: test1, seismic: {test_sgy}, labels: "
            f"{root / 'test_labels.npy'}}}]"]
    w = root / "w"
    for cmd in ("train", "heatmap"):
        result = invoke(cmd, "-w", w, *sets_args(sets), "-q")
        assert result.exit_code == 0, result.output
    return {"w": w, "sets": sets, "flags": sets_args(sets), "train_sgy": train_sgy,
            "test_sgy": test_sgy, "test": test_seis, "test_labels": test_lab}


def headers_equal(a: Path, b: Path) -> None:
    """Textual, binary (but the sample format) and every trace header equal."""
    with segyio.open(a, ignore_geometry=True) as fa, segyio.open(b, ignore_geometry=True) as fb:
        assert fa.tracecount == fb.tracecount and fa.text[0] == fb.text[0]
        bin_a, bin_b = dict(fa.bin), dict(fb.bin)
        assert bin_a.pop(segyio.BinField.Format) == make_segy.IEEE_FLOAT
        bin_b.pop(segyio.BinField.Format)
        assert bin_a == bin_b
        for t in range(fa.tracecount):
            assert fa.header[t] == fb.header[t], t


# ---------------------------------------------------------------- definitions


def test_scores_by_hand() -> None:
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.25, 0.75, 0.0]], np.float32)
    facies, confidence, entropy = scores(probs)
    assert facies.tolist() == [0, 0, 1] and facies.dtype == np.uint8
    np.testing.assert_allclose(confidence, [1.0, 1 / 3, 0.75], rtol=1e-6)
    h = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)) / np.log(3)
    np.testing.assert_allclose(entropy, [0.0, 1.0, h], rtol=1e-5, atol=1e-6)


def test_both_axes_average_the_two_softmax_estimates(work, tmp_path) -> None:
    model, payload = load_model(Path(work["w"]) / "train" / "model.pt")
    vol = make_data.seismic((5, 7, 16)) * 3.0
    inline = probabilities(model, vol, payload["norm"], False)  # (IL, XL, Z, C)
    cross = probabilities(model, vol.transpose(1, 0, 2), payload["norm"], False)
    expected = (inline + cross.transpose(1, 0, 2, 3)) / 2
    got = np.zeros_like(expected)
    for axis, start, probs in sweep(model, vol, payload["norm"], "both", 3, False,
                                    tmp_path / "scratch.npy"):
        assert axis == "crossline"
        got[:, start:start + len(probs)] = probs.transpose(1, 0, 2, 3)
    np.testing.assert_allclose(got, expected, atol=1e-3)  # the inline pass waits in float16
    assert not (tmp_path / "scratch.npy").exists()
    assert not np.allclose(inline, cross.transpose(1, 0, 2, 3), atol=1e-3)  # both count


# ---------------------------------------------------------------- predict


def test_predict_test_volume_copies_the_survey(work, tmp_path) -> None:
    out = tmp_path / "pred"
    result = invoke("predict", "-w", work["w"], *work["flags"], "--out", out, "--axes", "inline",
                    "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    folder = out / "test1"
    facies = np.load(folder / "facies.npy")
    # the model's own normalisation, inline sections as the training code predicts them
    model, payload = load_model(Path(work["w"]) / "train" / "model.pt")
    norm = payload["norm"]
    images = (work["test"].transpose(0, 2, 1) - norm["mean"]) / norm["std"]
    amp = bf16_autocast(torch.device("cpu"), payload["config"]["train"]["amp"])  # as predict
    ids = predict_ids(model, torch.from_numpy(images.astype(np.float32)), amp).numpy()
    np.testing.assert_array_equal(facies, ids.transpose(0, 2, 1))
    m = summary["volumes"][0]["metrics"]
    assert m["pixel_acc"] == pytest.approx(float(np.mean(facies == work["test_labels"])))
    for name in ("facies", "confidence", "entropy"):
        headers_equal(folder / f"{name}.sgy", work["test_sgy"])
        np.testing.assert_array_equal(segy.read(folder / f"{name}.sgy"),
                                      np.load(folder / f"{name}.npy").astype(np.float32))
    conf, ent = np.load(folder / "confidence.npy"), np.load(folder / "entropy.npy")
    assert conf.min() >= 1 / 6 - 1e-6 and conf.max() <= 1 and 0 <= ent.min() <= ent.max() <= 1
    assert json.loads((out / "predict.json").read_text())["volumes"][0]["name"] == "test1"
    assert (folder / "preview.png").stat().st_size > 0


def test_predict_odd_step_shuffled_segy(work, tmp_path) -> None:
    """A crossline-sorted, shuffled odd-step file: outputs land on their input traces."""
    vol = make_data.seismic((6, 7, 10))
    src = make_segy.cube(tmp_path / "odd.sgy", vol, order="crossline", seed=4, **ODD)
    labels = tmp_path / "odd_labels.npy"
    np.save(labels, make_data.banded_labels(vol.shape))
    out = tmp_path / "pred"
    result = invoke("predict", "-w", work["w"], *work["flags"], "--out", out, "--input", src,
                    "--labels", labels, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["volumes"][0]["metrics"]["pixel_acc"] is not None
    for name in ("facies", "entropy"):
        path = out / "odd" / f"{name}.sgy"
        headers_equal(path, src)
        np.testing.assert_array_equal(segy.read(path),
                                      np.load(out / "odd" / f"{name}.npy").astype(np.float32))


def test_predict_npy_with_format_segy_is_a_regular_grid(work, tmp_path) -> None:
    src = tmp_path / "vol.npy"
    np.save(src, make_data.seismic((4, 9, 12)))
    out = tmp_path / "pred"
    assert invoke("predict", "-w", work["w"], *work["flags"], "--out", out, "--input", src,
                  "--format", "segy", "--axes", "crossline").exit_code == 0
    with segyio.open(out / "vol" / "facies.sgy") as f:
        assert len(f.ilines) == 4 and len(f.xlines) == 9 and len(f.samples) == 12
        np.testing.assert_array_equal(segyio.tools.cube(f),
                                      np.load(out / "vol" / "facies.npy").astype(np.float32))


def test_predict_f3_crop(work, tmp_path, f3_crop) -> None:
    out = tmp_path / "pred"
    result = invoke("predict", "-w", work["w"], *work["flags"], "--out", out, "--input", f3_crop)
    assert result.exit_code == 0, result.output
    path = out / "f3-crop" / "facies.sgy"
    with segyio.open(path, ignore_geometry=True) as f, \
            segyio.open(f3_crop, ignore_geometry=True) as g:
        for field in PLACED:
            np.testing.assert_array_equal(f.attributes(field)[:], g.attributes(field)[:])
        np.testing.assert_array_equal(f.samples, g.samples)
        assert f.bin[segyio.BinField.Interval] == g.bin[segyio.BinField.Interval]
    np.testing.assert_array_equal(segy.read(path), np.load(out / "f3-crop" / "facies.npy"))


# ---------------------------------------------------------------- refusals


def refused(result, *fragments: str) -> None:
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_predict_refuses_before_any_work(work, tmp_path) -> None:
    w, flags = work["w"], work["flags"]
    out = tmp_path / "pred"
    refused(invoke("predict", "-w", w, *flags, "--set", "data.classes=[a,b,c,d,e,f]", "--out",
                   out), "'data.classes'", "use a new workdir")  # the workdir's settings
    short = tmp_path / "short.npy"
    np.save(short, make_data.seismic((4, 5, 6)))
    refused(invoke("predict", "-w", w, *flags, "--input", short, "--out", out),
            "6 samples per trace", "at least 8", "pad the traces")
    bad = make_data.seismic((4, 5, 12))
    bad[1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    refused(invoke("predict", "-w", w, *flags, "--input", tmp_path / "nan.npy", "--out", out),
            "NaN/Inf")
    assert not out.exists()  # nothing was written by the refused runs
    refused(invoke("predict", "-w", tmp_path / "none", *flags, "--out", out),
            "no training run")
    assert not out.exists()


def test_predict_existing_output_needs_force(work, tmp_path) -> None:
    src = tmp_path / "vol.npy"
    np.save(src, make_data.seismic((3, 4, 12)))
    out = tmp_path / "pred"
    args = ("predict", "-w", work["w"], *work["flags"], "--input", src, "--out", out)
    assert invoke(*args).exit_code == 0
    refused(invoke(*args), "exists", "--force")
    assert invoke(*args, "--force", "--axes", "inline").exit_code == 0
    assert json.loads((out / "predict.json").read_text())["axes"] == "inline"
    other = tmp_path / "project"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    refused(invoke(*args[:-1], other, "--force"), "not a falsecli predict folder")
    assert (other / "notes.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_lazy_segy_volume_reads_like_segy_read(tmp_path) -> None:
    for case, make in make_segy.GOOD.items():
        path = make(tmp_path / f"{case}.sgy")
        whole = segy.read(path)
        lazy = segy.SegyVolume(segy.survey(path))
        assert lazy.shape == whole.shape
        np.testing.assert_array_equal(lazy[2:4], whole[2:4])
        np.testing.assert_array_equal(lazy[:, 3], whole[:, 3])
        np.testing.assert_array_equal(lazy[1, :, :], whole[1])


# ---------------------------------------------------------------- export


def test_export_heat_maps_as_segy(work, tmp_path) -> None:
    out = tmp_path / "exp"
    result = invoke("export", "-w", work["w"], *work["flags"], "--out", out)
    assert result.exit_code == 0, result.output
    forgetting = np.load(Path(work["w"]) / "heatmap" / "forgetting.npz")
    never = np.load(Path(work["w"]) / "heatmap" / "never_learned.npz")
    every = config.resolve(sets=work["sets"])["data"]["val_every"]
    for name in ("forgetting", "switch", "never_learned"):
        headers_equal(out / "train" / f"{name}.sgy", work["train_sgy"])
    cube = segy.read(out / "train" / "forgetting.sgy")
    n_il, n_xl, _ = cube.shape
    tracked_il = [i for i in range(n_il) if i % every == 0]
    tracked_xl = [j for j in range(n_xl) if j % every == 0]
    on_xl = np.isin(np.arange(n_xl), tracked_xl)
    for i in tracked_il:
        section = forgetting[f"inline_{i:04d}"].T  # [crossline, depth]
        np.testing.assert_array_equal(cube[i][~on_xl], section[~on_xl])
        for j in tracked_xl:  # crossings hold the larger of the two counts
            np.testing.assert_array_equal(
                cube[i, j], np.maximum(section[j], forgetting[f"crossline_{j:04d}"].T[i]))
    off = np.ones((n_il, n_xl), bool)
    off[tracked_il] = False
    off[:, tracked_xl] = False
    assert not cube[off].any()  # untracked traces are zero
    nl = segy.read(out / "train" / "never_learned.sgy")
    i = tracked_il[1]
    np.testing.assert_array_equal(nl[i][~on_xl], never[f"inline_{i:04d}"].T[~on_xl])
    refused(invoke("export", "-w", work["w"], *work["flags"], "--out", out), "--force")
