"""Tracking files: device packbits, growing .npy rows, and the history a Tracker writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from falsecli.data.dataset import Section
from falsecli.core.errors import FalseCliError
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
