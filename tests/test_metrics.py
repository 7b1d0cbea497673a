"""Benchmark metrics against hand-computed matrices and an independent plain-loop version."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from falsecli.method.metrics import ConfusionMatrix, confusion, scores

IGNORE = 255


def test_confusion_hand_computed() -> None:
    label = torch.tensor([0, 0, 1, 1, 2, 255], dtype=torch.uint8)
    pred = torch.tensor([0, 1, 1, 1, 0, 2], dtype=torch.uint8)
    hist = confusion(pred, label, 3, IGNORE)
    assert hist.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    s = scores(hist.numpy(), ["a", "b", "c"])
    assert s["pixel_acc"] == pytest.approx(3 / 5)
    assert s["class_acc"] == pytest.approx({"a": 0.5, "b": 1.0, "c": 0.0})
    assert s["mean_class_acc"] == pytest.approx(0.5)
    # IoU: a 1/(2+2-1), b 2/(2+3-2), c 0/(1+0-0)
    assert s["class_iou"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})
    assert s["miou"] == pytest.approx(1 / 3)
    assert s["fwiou"] == pytest.approx(2 / 5 * 1 / 3 + 2 / 5 * 2 / 3)


def test_absent_classes() -> None:
    # class 2 only predicted, class 3 nowhere: 2 has IoU 0 (counted), 3 has no score at all
    hist = np.array([[3, 1, 0, 0], [0, 2, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    s = scores(hist, ["a", "b", "c", "d"])
    assert s["class_acc"] == {"a": 0.75, "b": 0.5, "c": None, "d": None}
    assert s["mean_class_acc"] == pytest.approx(0.625)
    assert s["class_iou"]["c"] == 0.0 and s["class_iou"]["d"] is None
    assert s["miou"] == pytest.approx((3 / 4 + 2 / 5 + 0.0) / 3)
    assert s["fwiou"] == pytest.approx(4 / 8 * 3 / 4 + 4 / 8 * 2 / 5)
    json.dumps(s, allow_nan=False)  # None, never NaN, in JSON


def test_nothing_labelled() -> None:
    s = scores(np.zeros((3, 3), dtype=np.int64), ["a", "b", "c"])
    assert s["pixel_acc"] is None and s["miou"] is None and s["fwiou"] is None
    assert set(s["class_acc"].values()) == {None}


def plain_scores(labels: np.ndarray, preds: np.ndarray, n: int) -> dict:
    """The benchmark's definitions, pixel by pixel, without a matrix."""
    tp, lab, prd = [0] * n, [0] * n, [0] * n
    for y, p in zip(labels.tolist(), preds.tolist()):
        if y == IGNORE:
            continue
        lab[y] += 1
        prd[p] += 1
        tp[y] += y == p
    total = sum(lab)
    acc = [tp[k] / lab[k] if lab[k] else None for k in range(n)]
    iou = [tp[k] / (lab[k] + prd[k] - tp[k]) if lab[k] + prd[k] else None for k in range(n)]
    present = [a for a in acc if a is not None]
    ious = [v for v in iou if v is not None]
    return {"pixel_acc": sum(tp) / total, "mean_class_acc": sum(present) / len(present),
            "miou": sum(ious) / len(ious),
            "fwiou": sum(lab[k] / total * iou[k] for k in range(n) if lab[k]), "class_acc": acc}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_plain_loop_accumulated(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 6
    labels = rng.integers(0, n - 1, size=3000).astype(np.uint8)  # class 5 never labelled
    labels[rng.random(3000) < 0.1] = IGNORE
    preds = np.where(rng.random(3000) < 0.6, labels % n, rng.integers(0, n, 3000)).astype(np.uint8)
    cm = ConfusionMatrix(n, IGNORE)
    for chunk in np.array_split(np.arange(3000), 7):  # accumulated across batches
        cm.update(torch.from_numpy(preds[chunk]), torch.from_numpy(labels[chunk]))
    names = [f"c{k}" for k in range(n)]
    got = cm.scores(names)
    want = plain_scores(labels, preds, n)
    for key in ("pixel_acc", "mean_class_acc", "miou", "fwiou"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got["class_acc"]["c5"] is None
    assert [got["class_acc"][k] for k in names[:5]] == pytest.approx(want["class_acc"][:5])


def test_two_dimensional_batches_match_flat() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=(2, 5, 7))
    preds = rng.integers(0, 4, size=(2, 5, 7))
    flat = confusion(torch.from_numpy(preds.ravel()), torch.from_numpy(labels.ravel()), 4, IGNORE)
    assert torch.equal(confusion(torch.from_numpy(preds), torch.from_numpy(labels), 4, IGNORE),
                       flat)
    assert int(flat.sum()) == labels.size
