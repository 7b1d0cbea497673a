"""The train stage end to end on a tiny volume, plus its batching, loss and augmentations.

One CLI run (module fixture) is shared; a second run with the same seed, interrupted and
resumed, must reproduce its history bit for bit.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, sets_args, shared
from typer.testing import CliRunner

from falsecli.core import config
from falsecli.method.augment import flip, rotate, rotate_by
from falsecli.cli import app
from falsecli.data.dataset import load_dataset
from falsecli.core.errors import FalseCliError
from falsecli.core.runtime import bf16_autocast
from falsecli.method.model import load_model
from falsecli.method.tracking import RowFile
from falsecli.method.pool import Pool
from falsecli.method.training import class_weights, labelled_loss, predict
from falsecli.stages.train import train

#: two section shapes (13 and 12 wide), a group of 9 (its last batch of one merges), and
#: 2175 tracked pixels (not a multiple of 8)
SMALL = TINY + ["data.synthetic.shape=[12,13,29]", "data.synthetic.test_shape=[6,13,29]",
                "train.late_from=2"]
EPOCHS = 3
ARTIFACTS = ["manifest.json", "config.yaml", "model.pt", "metrics.jsonl", "eval.json", "tracking/sections.json",
             "tracking/labels.npy", "tracking/correct.npy", "tracking/switch.npy",
             "tracking/pred_last.npy", "tracking/margin.npy",
             "tracking/datamap.npz"]


def run_cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def cfg() -> config.Config:
    return config.resolve(sets=SMALL)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``falsecli train`` through the real CLI; returns (workdir, result)."""
    work = shared(tmp_path_factory.mktemp("work"))
    result = run_cli("train", "-w", work, *sets_args(SMALL), "--quiet")
    assert result.exit_code == 0, result.output
    return work, result


def history(stage_dir) -> dict:
    """Everything a run records that must be reproducible (not its timings)."""
    rows = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        del row["seconds"]
    with np.load(stage_dir / "tracking" / "datamap.npz") as npz:
        datamap = dict(npz.items())
    return {"metrics": rows, "datamap": datamap,
            **{name: np.load(stage_dir / "tracking" / name) for name in
               ("correct.npy", "switch.npy", "pred_last.npy", "labels.npy")}}


def assert_same_history(a, b) -> None:
    ha, hb = history(a), history(b)
    assert ha["metrics"] == hb["metrics"]
    for name in ("correct.npy", "switch.npy", "pred_last.npy", "labels.npy"):
        assert np.array_equal(ha[name], hb[name]), name
    # the data-map accumulators, from the checkpoint when resumed, bit for bit
    assert ha["datamap"].keys() == hb["datamap"].keys()
    for key, value in ha["datamap"].items():
        assert np.array_equal(value, hb["datamap"][key]), key
    assert int(ha["datamap"]["late_epochs"]) == EPOCHS - 1


# ---------------------------------------------------------------- the stage


def test_config_yaml_beside_the_manifest_reproduces_the_run(trained, tmp_path) -> None:
    """``-c train/config.yaml`` alone (no --set) repeats the run bit for bit on CPU."""
    work, _ = trained
    again = tmp_path / "again"
    result = run_cli("train", "-c", work / "train" / "config.yaml", "-w", again, "--quiet")
    assert result.exit_code == 0, result.output
    assert_same_history(work / "train", again / "train")
    saved = json.loads((work / "train" / "manifest.json").read_text())["config"]
    assert json.loads((again / "train" / "manifest.json").read_text())["config"] == saved


def test_cli_writes_every_artifact(trained, cfg) -> None:
    work, result = trained
    stage = work / "train"
    for rel in ARTIFACTS:
        assert (stage / rel).is_file(), rel
        assert str(stage / rel) in result.stdout  # paths on stdout for scripts
    assert not (stage / "checkpoint.pt").exists()
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["seed"] == 0
    assert manifest["device"] == "cpu"
    assert sorted(manifest["outputs"]) == sorted(a for a in ARTIFACTS if a != "manifest.json")

    rows = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert set(row) == {"epoch", "train_loss", "pixel_acc", "mean_class_acc", "miou",
                            "class_acc", "seconds"}
        assert list(row["class_acc"]) == cfg["data"]["classes"]
        assert math.isfinite(row["train_loss"]) and 0 <= row["pixel_acc"] <= 1
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]  # it learns

    evals = json.loads((stage / "eval.json").read_text())
    assert set(evals) == {"val", "test1"}
    for scores in evals.values():
        assert {"pixel_acc", "mean_class_acc", "miou", "fwiou", "class_acc"} <= set(scores)
    assert evals["val"]["pixel_acc"] == rows[-1]["pixel_acc"]

    payload = torch.load(stage / "model.pt", weights_only=True)
    assert payload["classes"] == cfg["data"]["classes"]
    assert payload["config"]["train"]["epochs"] == EPOCHS
    ds = load_dataset(cfg)
    assert payload["norm"] == {"mean": ds.stats[0], "std": ds.stats[1]}


def test_tracking_pixel_order_and_consistency(trained, cfg) -> None:
    work, _ = trained
    tdir = work / "train" / "tracking"
    ds = load_dataset(cfg)
    tracked = ds.tracked(["val"])
    labels = np.load(tdir / "labels.npy")
    assert labels.dtype == np.uint8
    assert np.array_equal(labels, np.concatenate([ds.label(s).ravel() for s in tracked]))
    meta = json.loads((tdir / "sections.json").read_text())
    n_pixels = labels.size
    assert n_pixels == 2175 and meta["n_pixels"] == n_pixels and meta["epochs"] == EPOCHS
    assert [s["name"] for s in meta["sections"]] == [s.name for s in tracked]
    assert {s["shape"][1] for s in meta["sections"]} == {12, 13}

    correct, switch = np.load(tdir / "correct.npy"), np.load(tdir / "switch.npy")
    assert correct.shape == switch.shape == (EPOCHS, math.ceil(n_pixels / 8))
    assert correct.dtype == switch.dtype == np.uint8
    assert not switch[0].any()
    pred_last = np.load(tdir / "pred_last.npy")
    assert np.array_equal(np.unpackbits(correct[-1])[:n_pixels], pred_last == labels)
    # a pixel whose correctness changed must have switched
    acc = np.unpackbits(correct, axis=1)[:, :n_pixels]
    sw = np.unpackbits(switch, axis=1)[:, :n_pixels]
    assert np.all(sw[1:] >= (acc[1:] != acc[:-1]))

    # the saved model reproduces the last predictions, section by section, in this order
    model, payload = load_model(work / "train" / "model.pt")
    amp = bf16_autocast(torch.device("cpu"), payload["config"]["train"]["amp"])  # as trained
    for sec, entry in zip(tracked, meta["sections"]):
        pred = predict(model, torch.from_numpy(ds.image(sec))[None], amp=amp)[0].numpy()
        o = entry["offset"]
        assert np.array_equal(pred.ravel(), pred_last[o:o + pred.size]), sec.name
    # the final margin: p(label) − the likeliest other p, positive exactly where the last
    # prediction is right (float16: a margin within rounding of 0 may tie either way)
    margin = np.load(tdir / "margin.npy")
    assert margin.dtype == np.float16 and margin.shape == labels.shape
    assert np.isnan(margin[labels == 255]).all() and np.isfinite(margin[labels != 255]).all()
    known = (labels != 255) & (np.abs(margin.astype(np.float32)) > 1e-3)
    assert known.sum() > 0.5 * (labels != 255).sum()
    assert np.array_equal(margin[known] > 0, (pred_last == labels)[known])
    assert np.abs(margin[labels != 255]).max() <= 1
    # val metrics of the last epoch come from these very predictions
    valid = labels != 255
    evals = json.loads((work / "train" / "eval.json").read_text())
    assert evals["val"]["pixel_acc"] == pytest.approx((pred_last == labels)[valid].mean())


def test_data_map_agrees_with_the_history(trained) -> None:
    """The accumulators against the run's own history, exactly: a pixel right in every
    epoch had its label above the top wrong class each time (wrong: below); the late
    window's class is the last prediction, and a positive late margin means wrong in every
    late epoch."""
    h = history(trained[0] / "train")
    dm, labels = h["datamap"], h["labels.npy"]
    labelled = labels != 255
    right = np.unpackbits(h["correct.npy"], axis=1)[:, :labels.size].astype(bool)
    always, never = right.all(0), ~right.any(0) & labelled
    assert always.any() and never.any()
    lead = dm["label_mean"] - dm["wrong_mean"]
    assert (lead[always] > 0).all() and (lead[never] < 0).all()
    assert ((dm["label_var"] >= 0) & (dm["label_var"] <= 0.25)).all()
    stable = dm["late_class"] != 255
    assert stable.any() and (dm["late_class"][stable] == h["pred_last.npy"][stable]).all()
    late_from = int(dm["late_from"])
    wrong_late = ~right[late_from - 1:].any(0) & labelled
    assert (wrong_late[(dm["late_margin"] > 0) & labelled]).all()


def test_second_run_without_force_refuses(trained) -> None:
    work, _ = trained
    stage = work / "train"
    before = {rel: (stage / rel).read_bytes() for rel in ARTIFACTS}
    result = run_cli("train", "-w", work, *sets_args(SMALL), "--quiet")
    assert result.exit_code == 1
    assert "already complete" in result.stderr and "--force" in result.stderr
    assert before == {rel: (stage / rel).read_bytes() for rel in ARTIFACTS}


class Interrupt(Exception):
    pass


def test_same_seed_and_resume_reproduce_the_history(trained, cfg, tmp_path) -> None:
    """A second run with the same seed, interrupted after epoch 1 and resumed, records
    exactly the history of the uninterrupted CLI run."""
    def stop_after_first(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path, on_epoch=stop_after_first)
    stage, reference = tmp_path / "train", trained[0] / "train"
    assert (stage / "checkpoint.pt").is_file() and not (stage / "manifest.json").exists()
    for name in ("correct.npy", "switch.npy"):  # valid .npy after every epoch; same seed
        assert np.array_equal(np.load(stage / "tracking" / name),
                              np.load(reference / "tracking" / name)[:1])
    # killed after epoch 2's tracking row was appended but before its checkpoint
    width = np.load(stage / "tracking" / "correct.npy").shape[1]
    RowFile(stage / "tracking" / "correct.npy", width).append(np.full(width, 0xFF, np.uint8))

    result = run_cli("train", "-w", tmp_path, *sets_args(SMALL), "--quiet")
    assert result.exit_code == 1
    assert f"an interrupted run is in {stage} (epoch 1 of {EPOCHS})" in result.stderr
    assert "--resume" in result.stderr and "--force" in result.stderr
    with pytest.raises(FalseCliError, match="train.lr=0.001, not 0.5"):
        train(config.merge(cfg, {"train": {"lr": 0.5}}), tmp_path, resume=True)

    result = run_cli("train", "-w", tmp_path, *sets_args(SMALL), "--quiet", "--resume")
    assert result.exit_code == 0, result.output
    assert_same_history(reference, stage)
    assert not (stage / "checkpoint.pt").exists()


def test_extra_samples_rotate_weights_and_a_tracked_test_volume(cfg, tmp_path) -> None:
    """One short run with the other options: transfer samples join their shape's group,
    rotation, class weights, and test1 tracked while the untracked val sections are still
    predicted for the epoch metrics."""
    rng = np.random.default_rng(0)
    samples = tmp_path / "samples.npz"
    images = rng.standard_normal((5, 29, 12)).astype(np.float32)
    labels = rng.integers(0, 6, (5, 29, 12)).astype(np.uint8)
    np.savez(samples, images=images, labels=labels, source=np.array(["a"] * 5),
             target=np.array(["b"] * 5))
    run_cfg = config.merge(cfg, {"train": {"epochs": 1, "aug": "rotate", "class_weights": True,
                                           "track": ["test1"]}})
    summary = train(run_cfg, tmp_path, stage="retrain/transfer/seed0", extra_samples=samples)
    assert summary["train_samples"] == 19 + 5
    stage = tmp_path / "retrain/transfer/seed0"
    assert (stage / "manifest.json").is_file()

    ds = load_dataset(cfg)
    tracked = ds.tracked(["test1"])
    meta = json.loads((stage / "tracking" / "sections.json").read_text())
    assert {s["split"] for s in meta["sections"]} == {"test1"}
    assert meta["sections"][0]["name"] == "test1_inline_0000"
    labels_npy = np.load(stage / "tracking" / "labels.npy")
    assert np.array_equal(labels_npy, np.concatenate([ds.label(s).ravel() for s in tracked]))
    assert np.load(stage / "tracking" / "correct.npy").shape == (1, math.ceil(labels_npy.size / 8))
    # the val metrics are those of the untracked val sections, predicted in the same pass
    model, payload = load_model(stage / "model.pt")
    amp = bf16_autocast(torch.device("cpu"), payload["config"]["train"]["amp"])  # as trained
    hits = total = 0
    for sec in ds.sections("val"):
        pred = predict(model, torch.from_numpy(ds.image(sec))[None], amp=amp)[0].numpy()
        lab = ds.label(sec)
        hits += int(((pred == lab) & (lab != 255)).sum())
        total += int((lab != 255).sum())
    evals = json.loads((stage / "eval.json").read_text())
    assert evals["val"]["pixel_acc"] == pytest.approx(hits / total)

    labels[0, 0, 0] = 9
    np.savez(samples, images=images, labels=labels)
    with pytest.raises(FalseCliError, match=r"label ids \[9\]"):
        train(run_cfg, tmp_path / "bad", extra_samples=samples)


def test_batch_size_one_is_refused(cfg, tmp_path) -> None:
    with pytest.raises(FalseCliError, match="train.batch_size"):
        train(config.merge(cfg, {"train": {"batch_size": 1}}), tmp_path)


@pytest.mark.parametrize("key, value", [("eval_batch_size", 0), ("epochs", 0), ("lr", 0.0),
                                        ("lr", -1.0), ("weight_decay", -0.1),
                                        ("limit_batches", -1)])
def test_unusable_train_settings_are_refused(cfg, tmp_path, key, value) -> None:
    """Refused before anything is loaded or written (torch would fail with a traceback)."""
    with pytest.raises(FalseCliError, match=rf"'train\.{key}' (is )?\(?{value}"):
        train(config.merge(cfg, {"train": {key: value}}), tmp_path)
    assert not (tmp_path / "train").exists()


@pytest.mark.parametrize("payload, needle", [({"epoch": 1}, "it holds ['epoch']"),
                                             (torch.zeros(3), "it holds a Tensor")])
def test_foreign_checkpoint_is_a_one_line_error(cfg, tmp_path, payload, needle) -> None:
    (tmp_path / "train").mkdir()
    torch.save(payload, tmp_path / "train" / "checkpoint.pt")
    for resume in (False, True):
        with pytest.raises(FalseCliError, match="not a falsecli checkpoint") as err:
            train(cfg, tmp_path, resume=resume)
        assert needle in str(err.value) and "--force" in str(err.value)


# ---------------------------------------------------------------- batching and loss


@pytest.mark.parametrize("n, sizes", [(9, [4, 5]), (8, [4, 4]), (5, [5]), (3, [3])])
def test_batches_never_leave_a_batch_of_one(n: int, sizes: list[int]) -> None:
    """A last batch under 2 samples joins the one before (see test_model's lone sample)."""
    arrays = {(4, 5): (np.zeros((n, 4, 5), np.float32), np.zeros((n, 4, 5), np.uint8))}
    pool = Pool(arrays, torch.device("cpu"), resident=True)
    batches = pool.batches(torch.Generator().manual_seed(0), 4)
    assert sorted(len(index) for _, index in batches) == sizes  # in a shuffled order
    assert pool.n_batches(4) == len(sizes)


def test_pool_batches_cover_every_sample_once_per_shape() -> None:
    arrays = {(4, 5): (np.arange(9 * 20, dtype=np.float32).reshape(9, 4, 5),
                       np.zeros((9, 4, 5), np.uint8)),
              (4, 3): (np.arange(6 * 12, dtype=np.float32).reshape(6, 4, 3),
                       np.ones((6, 4, 3), np.uint8)),
              (2, 2): (np.zeros((1, 2, 2), np.float32), np.zeros((1, 2, 2), np.uint8))}
    pool = Pool(arrays, torch.device("cpu"), resident=True)
    assert pool.n_samples == 15 and len(pool.groups) == 2  # the lone sample is left out
    gen = torch.Generator().manual_seed(0)
    epoch1 = pool.batches(gen, 4)
    epoch2 = pool.batches(gen, 4)
    assert len(epoch1) == pool.n_batches(4) == 4
    seen = {}
    for group, index in epoch1:
        images, _ = pool.fetch(group, index)
        assert len(index) >= 2 and images.shape[1:] == group.images.shape[1:]
        seen.setdefault(tuple(images.shape[1:]), []).extend(index.tolist())
        assert torch.equal(images, group.images[index])
    assert sorted(seen[(4, 5)]) == list(range(9)) and sorted(seen[(4, 3)]) == list(range(6))
    again = pool.batches(torch.Generator().manual_seed(0), 4)
    assert [i.tolist() for _, i in again] == [i.tolist() for _, i in epoch1]  # seeded
    assert [i.tolist() for _, i in epoch2] != [i.tolist() for _, i in epoch1]  # reshuffled


def test_class_weights_inverse_frequency() -> None:
    w = class_weights(np.array([10, 30, 0, 60]))
    assert w.tolist() == pytest.approx([100 / 30, 100 / 90, 0.0, 100 / 180])
    assert float((w * torch.tensor([10.0, 30, 0, 60])).sum()) == pytest.approx(100)


def test_loss_is_the_mean_over_labelled_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 5)
    labels = torch.randint(0, 4, (2, 3, 5), dtype=torch.uint8)
    labels[0, 0] = 255
    weights = torch.tensor([1.0, 2.0, 0.5, 3.0])
    for w in (None, weights):
        want = F.cross_entropy(logits, labels.long(), weight=w, ignore_index=255)
        got = labelled_loss(logits, labels, w, 255).item()
        assert got == pytest.approx(want.item(), rel=1e-6)
    assert labelled_loss(logits, torch.full_like(labels, 255), weights, 255).item() == 0.0


# ---------------------------------------------------------------- augmentations


def _batch(n: int = 4, h: int = 9, w: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(n, h, w, generator=gen),
            torch.randint(0, 6, (n, h, w), generator=gen, dtype=torch.uint8))


def test_flip_keeps_labels_aligned_and_undoes_itself() -> None:
    images, labels = _batch(16)
    fi, fl = flip(images, labels, torch.Generator().manual_seed(3))
    flipped = [not torch.equal(fi[i], images[i]) for i in range(16)]
    assert 0 < sum(flipped) < 16
    for i in range(16):
        want = (images[i].flip(-1), labels[i].flip(-1)) if flipped[i] else (images[i], labels[i])
        assert torch.equal(fi[i], want[0]) and torch.equal(fl[i], want[1])
    back = flip(fi, fl, torch.Generator().manual_seed(3))  # same draws: flip of a flip
    assert torch.equal(back[0], images) and torch.equal(back[1], labels)


def test_rotate_by_zero_is_identity() -> None:
    images, labels = _batch()
    ri, rl = rotate_by(images, labels, torch.zeros(4), 255)
    assert torch.allclose(ri, images, atol=1e-5) and torch.equal(rl, labels)
    ri, rl = rotate(images, labels, torch.Generator().manual_seed(0), 0.0, 255)
    assert torch.allclose(ri, images, atol=1e-5) and torch.equal(rl, labels)


def test_rotate_is_rigid_and_nearest_for_labels() -> None:
    images, labels = _batch(2, 9, 7)
    _, half_turn = rotate_by(images, labels, torch.full((2,), math.pi), 255)
    assert torch.equal(half_turn, labels.flip(-1).flip(-2))
    square_i, square_l = _batch(2, 8, 8)
    _, quarter = rotate_by(square_i, square_l, torch.full((2,), math.pi / 2), 255)
    assert any(torch.equal(quarter, torch.rot90(square_l, k, (1, 2))) for k in (1, 3))


def test_rotated_in_pixels_are_ignored() -> None:
    images = torch.ones(1, 21, 31)
    labels = torch.full((1, 21, 31), 3, dtype=torch.uint8)
    ri, rl = rotate_by(images, labels, torch.tensor([math.radians(10.0)]), 255)
    assert set(rl.unique().tolist()) == {3, 255}  # no interpolated label values
    for corner in (rl[0, 0, 0], rl[0, 0, -1], rl[0, -1, 0], rl[0, -1, -1]):
        assert corner == 255
    assert rl[0, 10, 15] == 3 and ri[0, 10, 15] == pytest.approx(1.0)
    assert torch.all(ri[rl == 255] < 1.0)  # image padding is zero (the mean)


def test_bf16_autocast_only_where_the_cpu_computes_in_bf16(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    cpu = torch.device("cpu")
    assert not bf16_autocast(cpu, False)  # train.amp: false is fp32 everywhere
    for avx512_bf16, amx, expected in ((True, False, True), (False, True, True),
                                       (False, False, False)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert bf16_autocast(cpu, True) is expected
