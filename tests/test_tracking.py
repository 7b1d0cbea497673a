"""Tracking files: device packbits, growing .npy rows, and the history a Tracker writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import independent
from falsecli.data.dataset import Section
from falsecli.core.errors import FalseCliError
from falsecli.method.datamaptrack import DataMapTracker, label_probs
from falsecli.method.history import HEADER_BYTES, RowFile
from falsecli.method.tracking import Tracker, offsets, packbits


@pytest.mark.parametrize("n", [1, 7, 8, 9, 61, 1000, 1003])
def test_packbits_matches_numpy(n: int) -> None:
    bits = torch.rand(3, n, generator=torch.Generator().manual_seed(n)) < 0.5
    assert np.array_equal(packbits(bits).numpy(), np.packbits(bits.numpy(), axis=-1))
    assert np.array_equal(packbits(bits[0]).numpy(), np.packbits(bits[0].numpy()))


def test_packbits_bit_order() -> None:
    bits = torch.tensor([True] + [False] * 8 + [True])  # 10 pixels -> 2 bytes
    assert packbits(bits).tolist() == [0b1000_0000, 0b0100_0000]


def test_rowfile_is_valid_npy_after_every_append(tmp_path) -> None:
    rows = RowFile(tmp_path / "r.npy", 5)
    rows.create()
    assert np.load(rows.path).shape == (0, 5)
    data = np.arange(20, dtype=np.uint8).reshape(4, 5)
    for k in range(4):
        rows.append(data[k])
        assert np.array_equal(np.load(rows.path), data[: k + 1])
        assert np.array_equal(np.load(rows.path, mmap_mode="r"), data[: k + 1])
        assert rows.path.stat().st_size == HEADER_BYTES + 5 * (k + 1)
    rows.truncate(2)
    assert np.array_equal(np.load(rows.path), data[:2])
    rows.append(data[3])
    assert np.array_equal(np.load(rows.path), data[[0, 1, 3]])


def test_rowfile_killed_mid_append_keeps_old_rows(tmp_path) -> None:
    rows = RowFile(tmp_path / "r.npy", 4)
    rows.create()
    rows.append(np.ones(4, np.uint8))
    with open(rows.path, "ab") as fh:  # data written, header not yet updated
        fh.write(b"\x07" * 4)
    assert np.array_equal(np.load(rows.path), np.ones((1, 4), np.uint8))
    rows.append(np.full(4, 2, np.uint8))  # the next append overwrites the partial row
    assert np.load(rows.path).tolist() == [[1] * 4, [2] * 4]


def test_rowfile_errors(tmp_path) -> None:
    rows = RowFile(tmp_path / "r.npy", 4)
    rows.create()
    with pytest.raises(FalseCliError, match="expected 3"):
        RowFile(rows.path, 3).rows()
    with pytest.raises(FalseCliError, match="checkpoint is at epoch 2"):
        rows.truncate(2)
    (tmp_path / "x.npy").write_bytes(b"garbage")
    with pytest.raises(FalseCliError, match="not a tracking history"):
        RowFile(tmp_path / "x.npy", 4).rows()


SECTIONS = [Section("inline_0000", "val", "train", "inline", 0, (3, 5)),
            Section("inline_0005", "val", "train", "inline", 5, (3, 5)),
            Section("crossline_0000", "val", "train", "crossline", 0, (3, 3))]
P = 3 * 5 * 2 + 3 * 3  # 39 pixels: not a multiple of 8


def _history(tmp_path, preds: np.ndarray, labels: np.ndarray) -> Tracker:
    tracker = Tracker(tmp_path, SECTIONS, torch.from_numpy(labels), ["a", "b", "c"], 255)
    for pred in preds:
        tracker.record(torch.from_numpy(pred))
    tracker.finish()
    return tracker


def test_tracker_history(tmp_path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, P).astype(np.uint8)
    labels[:4] = 255
    preds = rng.integers(0, 3, (4, P)).astype(np.uint8)
    preds[2] = preds[1]  # an epoch without a switch
    _history(tmp_path, preds, labels)

    correct = np.load(tmp_path / "correct.npy")
    switch = np.load(tmp_path / "switch.npy")
    assert correct.dtype == np.uint8 and correct.shape == (4, (P + 7) // 8) == switch.shape
    # plain per-pixel definitions, then packed by numpy
    for t in range(4):
        acc = [int(preds[t, i] == labels[i]) for i in range(P)]
        assert np.array_equal(np.unpackbits(correct[t])[:P], acc)
        sw = [0] * P if t == 0 else [int(preds[t, i] != preds[t - 1, i]) for i in range(P)]
        assert np.array_equal(np.unpackbits(switch[t])[:P], sw)
    assert not np.unpackbits(correct, axis=1)[:, :4].any()  # ignored pixels never correct
    assert not switch[2].any() and not switch[0].any()
    assert not np.unpackbits(correct, axis=1)[:, P:].any()  # zero padding
    assert np.array_equal(np.load(tmp_path / "labels.npy"), labels)
    assert np.array_equal(np.load(tmp_path / "pred_last.npy"), preds[-1])

    meta = json.loads((tmp_path / "sections.json").read_text())
    assert meta["epochs"] == 4 and meta["n_pixels"] == P and meta["ignore_index"] == 255
    assert meta["classes"] == ["a", "b", "c"]
    assert [s["offset"] for s in meta["sections"]] == [0, 15, 30] == offsets(SECTIONS)
    assert meta["sections"][2] == {"name": "crossline_0000", "split": "val",
                                   "axis": "crossline", "index": 0, "shape": [3, 3],
                                   "offset": 30}


def test_tracker_resume_truncates_to_checkpoint(tmp_path) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, P).astype(np.uint8)
    preds = rng.integers(0, 3, (5, P)).astype(np.uint8)
    _history(tmp_path / "full", preds, labels)
    # interrupted: 3 rows written, checkpoint after epoch 2
    _history(tmp_path / "cut", preds[:3], labels)
    tracker = Tracker(tmp_path / "cut", SECTIONS, torch.from_numpy(labels), ["a", "b", "c"], 255,
                      epochs=2, previous=torch.from_numpy(preds[1]))
    assert np.load(tmp_path / "cut" / "correct.npy").shape[0] == 2
    for pred in preds[2:]:
        tracker.record(torch.from_numpy(pred))
    tracker.finish()
    for name in ("correct.npy", "switch.npy", "pred_last.npy"):
        assert np.array_equal(np.load(tmp_path / "cut" / name), np.load(tmp_path / "full" / name))
    assert json.loads((tmp_path / "cut" / "sections.json").read_text())["epochs"] == 5


# ---------------------------------------------------------------- data-map accumulators


def test_label_probs_by_hand() -> None:
    """Two pixels, three classes: the label's probability and the likeliest other class's,
    whether or not the label is the argmax; an unlabelled pixel is read as class 0."""
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.3, 0.2]])
    scores = p.log().T.reshape(1, 3, 1, 3)  # softmax(log p) = p
    labels = torch.tensor([[[0, 2, 255]]], dtype=torch.uint8)
    out = label_probs(scores, labels, 255)
    assert torch.allclose(out, torch.tensor([[0.7, 0.6, 0.5], [0.2, 0.3, 0.3]]))


def test_label_probs_match_a_plain_loop_over_pixels() -> None:
    rng = np.random.default_rng(5)
    scores = torch.from_numpy(rng.normal(0, 3, (2, 4, 3, 5)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 4, (2, 3, 5)).astype(np.uint8))
    out = label_probs(scores, labels, 255).numpy()
    p = torch.softmax(scores, 1).numpy().transpose(0, 2, 3, 1).reshape(-1, 4)
    for k, (row, lab) in enumerate(zip(p, labels.numpy().ravel())):
        assert out[0, k] == row[lab] and out[1, k] == max(np.delete(row, lab)), k


def test_datamap_tracker_matches_the_whole_history_and_resumes(tmp_path) -> None:
    """Welford's running mean and variance, the late minimum margin and the late window's
    one class equal those of the full history; a tracker rebuilt from its checkpoint state
    after epoch 3 ends with the very same bytes."""
    rng = np.random.default_rng(2)
    epochs, late_from = 6, 3
    probs = rng.uniform(0, 1, (epochs, 2, P)).astype(np.float32)
    probs[:, 0, :5] = 0.999 + rng.uniform(0, 1e-3, (epochs, 5))  # near 1: cancellation-prone
    preds = rng.integers(0, 2, (epochs, P)).astype(np.uint8)
    preds[late_from - 1:, :10] = 1  # one class through the late window
    full = DataMapTracker(P, late_from, torch.device("cpu"))
    for t in range(epochs):
        full.record(torch.from_numpy(probs[t]), torch.from_numpy(preds[t]))
    full.save(tmp_path / "full")
    with np.load(tmp_path / "full" / "tracking" / "datamap.npz") as npz:
        got = dict(npz.items())
    for key, want in independent.datamap(probs.astype(np.float64), preds, late_from).items():
        np.testing.assert_allclose(got[key], want, rtol=1e-5, atol=1e-7, err_msg=key)
    assert (got["late_class"][:10] == 1).all()
    assert (int(got["epochs"]), int(got["late_from"]), int(got["late_epochs"])) == (6, 3, 4)

    cut = DataMapTracker(P, late_from, torch.device("cpu"))
    for t in range(3):
        cut.record(torch.from_numpy(probs[t]), torch.from_numpy(preds[t]))
    state = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in cut.state().items()}
    resumed = DataMapTracker(P, late_from, torch.device("cpu"), state)
    for t in range(3, epochs):
        resumed.record(torch.from_numpy(probs[t]), torch.from_numpy(preds[t]))
    resumed.save(tmp_path / "cut")
    assert ((tmp_path / "cut" / "tracking" / "datamap.npz").read_bytes()
            == (tmp_path / "full" / "tracking" / "datamap.npz").read_bytes())
