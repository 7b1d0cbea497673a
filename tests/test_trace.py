"""``train.keep_every`` and ``falsecli trace`` on a tiny run whose training volume holds an
exact copy of a tracked section (inline 1 = inline 0), with weights kept every epoch and the
head's steps traced (``train.trace``).

The evidence the issue asks for: per-class scores add up to the section score, and the score
is the gradient dot product computed the plain way (autograd, one section at a time); one
batch gives the scores of section by section; a region where the network flips between two
classes is attributed mostly to training pixels of those two classes. That the planted copy
ranks first among the proponents holds with cosine TracIn and with the representation method
(its exactness: tests below and tests/test_tracing.py).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, sets_args, shared

from falsecli.core import config
from falsecli.core.errors import FalseCliError
from falsecli.data.dataset import load_dataset
from falsecli.data.synthetic import generate
from falsecli.method import influence
from falsecli.method.influence import Checkpoint, Query, class_scores, parameter_names
from falsecli.method.model import MODEL, kept_epochs, kept_path, load_kept, load_model
from falsecli.method.training import predict
from falsecli.stages.trace import INFLUENCE_CSV, load_influence
from falsecli.stages.train import train

EPOCHS = 3
QUERY = "inline_0000"
COPY = "inline_0001"


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> list[str]:
    """--set items of a files volume (16 x 24 x 32) whose training inline 1 is inline 0."""
    folder = tmp_path_factory.mktemp("data")
    syn = generate([16, 24, 32], seed=0)
    seismic, labels = syn.seismic.copy(), syn.labels.copy()
    seismic[1], labels[1] = seismic[0], labels[0]
    np.save(folder / "seismic.npy", seismic)
    np.save(folder / "labels.npy", labels)
    return TINY + [f"train.epochs={EPOCHS}", "train.keep_every=1", "data.source=files",
                   "train.trace={layers: [head], by: [section, class], every: 1}",
                   f"data.seismic={folder / 'seismic.npy'}",
                   f"data.labels={folder / 'labels.npy'}", "data.test=[]"]


@pytest.fixture(scope="module")
def run(planted, tmp_path_factory):
    """The trained workdir and its config."""
    work = shared(tmp_path_factory.mktemp("work"))
    cfg = config.resolve(sets=planted)
    train(cfg, work)
    return work, cfg


@pytest.fixture
def own(run, tmp_path) -> Path:
    """A copy of the trained workdir for a test that writes a trace into it (hard links:
    falsecli replaces files, never writes into them)."""
    work = tmp_path / "w"
    shutil.copytree(run[0], work, copy_function=os.link)
    return work


def prepare_trace(work, cfg, layers: str = "last", region: np.ndarray | None = None):
    """What the stage computes with: model, checkpoints, parameter names, dataset, query."""
    model, _ = load_model(work / "train" / MODEL)
    ckpts = [Checkpoint(e, k["lr"], k["state_dict"]) for e in kept_epochs(work / "train")
             for k in [load_kept(work / "train", e)]]
    ds = load_dataset(cfg)
    section = next(s for s in ds.sections("val") if s.name == QUERY)
    labels = ds.label(section)
    query = Query(ds.image(section), labels,
                  np.ones(labels.shape, bool) if region is None else region)
    return model, ckpts, parameter_names(model, layers), ds, query


# ---------------------------------------------------------------- train.keep_every


def test_keep_every_keeps_the_weights_of_every_kth_epoch(run, planted, tmp_path) -> None:
    work, cfg = run
    assert kept_epochs(work / "train") == [1, 2, 3]
    manifest = json.loads((work / "train" / "manifest.json").read_text())
    assert "kept/epoch_0002.pt" in manifest["outputs"]
    last = load_kept(work / "train", EPOCHS)
    model = torch.load(work / "train" / MODEL, weights_only=True)["state_dict"]
    assert last["lr"] == cfg["train"]["lr"] and last["epoch"] == EPOCHS
    assert all(torch.equal(last["state_dict"][k], v) for k, v in model.items())

    # every 2nd epoch, interrupted after epoch 2 and resumed: what was kept stays, the run
    # continues, and the weights equal the uninterrupted run's
    two = config.merge(cfg, {"train": {"keep_every": 2, "epochs": 4}})

    def stop(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(two, tmp_path, on_epoch=stop)
    assert kept_epochs(tmp_path / "train") == [2]
    kept_path(tmp_path / "train", 3).write_bytes(b"from an epoch after the checkpoint")
    train(two, tmp_path, resume=True)
    assert kept_epochs(tmp_path / "train") == [2, 4]
    resumed = json.loads((tmp_path / "train" / "manifest.json").read_text())["outputs"]
    assert {"kept/epoch_0002.pt", "kept/epoch_0004.pt"} <= set(resumed)
    a, b = load_kept(tmp_path / "train", 2)["state_dict"], load_kept(work / "train", 2)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # keep_every does not change training


def test_keep_every_is_checked() -> None:
    with pytest.raises(FalseCliError, match="train.keep_every"):
        config.resolve(sets=["train.keep_every=-1"])


# ---------------------------------------------------------------- the scores


def test_the_stage_writes_its_folder_in_rank_order(run, own, planted, cli) -> None:
    """influence.csv holds every training section once, ranked by score, its per-class
    columns are the scores of :func:`class_scores` (checked against autograd below) and add
    up to the score; the summary and the printed tables show its first rows."""
    _, cfg = run
    result = cli("trace", "-w", own, "--section", QUERY, *sets_args(planted), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    folder = own / "trace" / QUERY
    for name in ("influence.csv", "epochs.csv", "proponents.png", "opponents.png",
                 "epochs.png", "manifest.json"):
        assert (folder / name).is_file(), name
    rows = load_influence(folder / INFLUENCE_CSV)
    model, ckpts, names, ds, query = prepare_trace(own, cfg)
    sections = ds.sections("train")
    assert sorted(r["section"] for r in rows) == sorted(s.name for s in sections)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(a["score"] >= b["score"] for a, b in zip(rows, rows[1:]))
    assert rows[0]["score"] > rows[-1]["score"]
    per_class = class_scores(model, ckpts, names, query, ds, sections).sum(1)
    by_name = {r["section"]: r for r in rows}
    for s, want in zip(sections, per_class):
        row = by_name[s.name]
        # synthetic data: the survey numbers are the indices; the other axis is blank
        assert (row["inline"], row["crossline"]) == ((s.index, "") if s.axis == "inline"
                                                     else ("", s.index))
        np.testing.assert_allclose([row[c] for c in ds.classes], want, rtol=1e-5,
                                   atol=1e-6 * np.abs(per_class).max())
        # the per-class columns add up to the score
        assert sum(row[c] for c in ds.classes) == pytest.approx(row["score"], rel=1e-9,
                                                                abs=1e-15)
    top = [p["section"] for p in summary["proponents"]]
    assert top == [r["section"] for r in rows[:len(top)]] and top
    assert [p["section"] for p in summary["opponents"]] == \
        [r["section"] for r in rows[::-1][:len(top)]]

    text = cli("trace", "-w", own, "--section", QUERY, *sets_args(planted), "--force")
    assert text.exit_code == 0 and rows[0]["section"] in text.stdout
    assert "proponents" in text.stdout and rows[-1]["section"] in text.stdout


def test_the_planted_copy_ranks_first(own, planted, cli) -> None:
    """The copy of the query section is its first proponent, for the whole section and for
    its lower_ns pixels: with cosine TracIn (raw dot products rank it 6th-7th: sections with
    larger gradients come first), and in the classifier's representation (its margin)."""
    for method in (["--normalize", "cosine"], ["--method", "representation"]):
        for region in ([], ["--class", "lower_ns"]):
            result = cli("trace", "-w", own, "--section", QUERY, *region, *method,
                         *sets_args(planted), "--json", "--force")
            assert result.exit_code == 0, result.output
            first = json.loads(result.stdout)["proponents"][0]
            assert first.get("section", first.get("share")) == COPY, (method, region)


@pytest.mark.parametrize("layers", ["last", "all"])
def test_scores_are_lr_times_gradient_dot_products(run, layers) -> None:
    """Against the plain definition: autograd gradients of each section's mean loss (and of
    each class's share of it), one section at a time, dotted with the query gradient."""
    work, cfg = run
    model, ckpts, names, ds, query = prepare_trace(work, cfg, layers)
    sections = ds.sections("train")[:3]
    scores = class_scores(model, ckpts, names, query, ds, sections, batch_size=3)
    expect = np.zeros_like(scores)
    params = dict(model.named_parameters())
    for k, ckpt in enumerate(ckpts):
        model.load_state_dict(ckpt.state_dict)
        g_q = influence.region_gradient(model, names, query, ds.ignore_index)
        for p in params.values():
            p.requires_grad_(True)
        for i, s in enumerate(sections):
            image, labels = (torch.from_numpy(a) for a in ds.stack([s]))
            losses = torch.nn.functional.cross_entropy(
                model(image[:, None]), labels.long(), reduction="none")[0]
            for c in range(len(ds.classes)):
                part = losses[labels[0] == c].sum() / (labels != ds.ignore_index).sum()
                if not (labels[0] == c).any():
                    continue
                grads = torch.autograd.grad(part, [params[n] for n in names], retain_graph=True)
                expect[i, k, c] = ckpt.lr * sum(float((g * g_q[n]).sum())
                                                for g, n in zip(grads, names))
    np.testing.assert_allclose(scores, expect, rtol=2e-4, atol=1e-9 * np.abs(expect).max())
    assert np.abs(scores).max() > 0


def test_one_batch_equals_section_by_section(run) -> None:
    work, cfg = run
    model, ckpts, names, ds, query = prepare_trace(work, cfg)
    sections = ds.sections("train")
    batched = class_scores(model, ckpts, names, query, ds, sections, batch_size=16)
    single = class_scores(model, ckpts, names, query, ds, sections, batch_size=1)
    # the same numbers up to float32 rounding of batched convolutions
    print(f"one batch vs section by section: largest difference "
          f"{np.abs(batched - single).max() / np.abs(single).max():.1e} of the largest score")
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6 * np.abs(single).max())
    order = np.argsort(-batched.sum((1, 2)), kind="stable")
    assert np.array_equal(order, np.argsort(-single.sum((1, 2)), kind="stable"))


def flip_region(work, cfg) -> tuple[np.ndarray, tuple[int, int]]:
    """The query section's pixels whose predictions over the kept epochs take exactly two
    classes (the most common such pair) and change at least once."""
    model, ckpts, _, ds, query = prepare_trace(work, cfg)
    preds = []
    for ckpt in ckpts:
        model.load_state_dict(ckpt.state_dict)
        preds.append(predict(model.eval(), torch.from_numpy(query.image)[None], False)[0].numpy())
    preds = np.stack(preds)
    lo, hi = preds.min(0), preds.max(0)
    two = (lo != hi) & ((preds == lo) | (preds == hi)).all(0)
    pair = Counter(zip(lo[two].tolist(), hi[two].tolist())).most_common(1)[0][0]
    return two & (lo == pair[0]) & (hi == pair[1]), pair


def test_a_flipping_region_is_attributed_to_its_two_classes(run) -> None:
    work, cfg = run
    region, pair = flip_region(work, cfg)
    assert region.sum() >= 5
    model, ckpts, names, ds, query = prepare_trace(work, cfg, region=region)
    scores = class_scores(model, ckpts, names, query, ds, ds.sections("train"))
    magnitude = np.abs(scores).sum((0, 1))  # per class of the training pixels
    share = magnitude[list(pair)].sum() / magnitude.sum()
    counts = sum(np.bincount(ds.label(s).ravel(), minlength=len(ds.classes))
                 for s in ds.sections("train"))
    pixels = counts[list(pair)].sum() / counts.sum()
    print(f"flip region: {int(region.sum())} pixels between {ds.classes[pair[0]]} and "
          f"{ds.classes[pair[1]]}; share of |influence| on those classes' training pixels "
          f"{share:.3f} (their share of the training pixels: {pixels:.3f})")
    assert share > 0.5 and share > pixels + 0.2


def test_the_representation_adds_up_to_the_trained_layer(run, own, planted, cli) -> None:
    """representation.csv's shares plus the initial weights' part and the residual are the
    classifier's output over the region along its direction, recomputed here from the
    weights (hooks and plain conv2d, no snapshot); every epoch's rows, and both share sets."""
    _, cfg = run
    result = cli("trace", "-w", own, "--section", QUERY, "--method", "representation",
                 *sets_args(planted), "--json", "--force")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    folder = own / "trace" / QUERY
    for name in ("representation.csv", "representation_epochs.csv", "proponents.png",
                 "opponents.png", "epochs.png", "query.json"):
        assert (folder / name).is_file(), name
    model, _ = load_model(own / "train" / MODEL)
    ds = load_dataset(cfg)
    section = next(s for s in ds.sections("val") if s.name == QUERY)
    labels, image = ds.label(section), torch.from_numpy(ds.image(section))[None, None]
    seen = []
    model.classifier[4].register_forward_hook(lambda m, a, o: seen.append(a[0]))
    with torch.no_grad():
        logits = model(image)[0]
    initial = torch.load(own / "train" / "shares" / f"epoch_{EPOCHS:04d}.pt",
                         weights_only=True)["initial"]
    start = torch.nn.functional.conv2d(seen[0], initial["classifier.4.weight"],
                                       initial["classifier.4.bias"])
    start = torch.nn.functional.interpolate(start, size=labels.shape, mode="bilinear")[0]
    use = torch.from_numpy(labels != 255)
    direction = (logits * use).sum((1, 2))
    direction /= direction.norm()
    change = float(((logits - start) * use).sum((1, 2)) @ direction)
    with open(folder / "representation.csv") as fh:
        rows = list(csv.DictReader(fh))
    for by in ("section", "class"):
        total = sum(float(r["along"]) for r in rows if r["by"] == by)
        balance = summary["balance"][by]
        assert total + balance["residual"]["along"] == pytest.approx(change, rel=1e-4)
        assert balance["relative_error"]["along"] < 1e-5
    assert summary["initial"]["along"] + change == pytest.approx(summary["final"]["along"],
                                                                 rel=1e-5)
    names = {r["share"] for r in rows if r["by"] == "class"}
    assert names == {f"class_{c}" for c in range(len(ds.classes))} | {"weight_decay", "rounding"}
    with open(folder / "representation_epochs.csv") as fh:
        epochs = {int(r["epoch"]) for r in csv.DictReader(fh)}
    assert epochs == set(range(1, EPOCHS + 1))


# ---------------------------------------------------------------- refusals


def test_trace_refusals(run, planted, cli, tmp_path) -> None:
    work, _ = run
    args = ["-w", work, *sets_args(planted)]
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((3, 3), bool))
    cases = [
        (["--section", QUERY, "--mask", bad], "shape [3, 3], but section inline_0000 is [32, 24]"),
        (["--section", QUERY, "--mask", bad, "--class", "scruff"], "--class or --mask, not both"),
        (["--section", "inline_0003"], "inline_0003 is not a tracked section of train"),
        ([], "give --section"),
        (["--section", QUERY, "--layers", "nothing"], "selects no parameter"),
        (["--section", QUERY, "--method", "representation", "--layer", "classifier.1"],
         "'classifier.1', which train did not trace; use one of classifier.0.project.0, "
         "classifier.4"),
    ]
    for extra, message in cases:
        result = cli("trace", *args, *extra, "--force")
        assert result.exit_code == 1 and message in result.stderr, (extra, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1

    fresh = tmp_path / "nokept"
    train(config.resolve(sets=TINY + ["train.epochs=1"]), fresh)
    result = cli("trace", "-w", fresh, *sets_args(TINY), "--section", "inline_0005")
    assert result.exit_code == 1 and "--set train.keep_every=5" in result.stderr
    result = cli("trace", "-w", fresh, *sets_args(TINY), "--section", "inline_0005",
                 "--method", "representation")
    assert result.exit_code == 1 and "recorded no shares" in result.stderr
    assert "train.trace={layers: [head]" in result.stderr


def test_trace_scores_only_the_sections_the_run_trained_on(planted, cli, tmp_path) -> None:
    """With ``train.labelled`` the other training sections are the pool: their labels never
    trained the run, so trace leaves them out."""
    labelled = ["inline_0001", "inline_0002", "crossline_0003"]
    sets = planted + [f"train.labelled=[{','.join(labelled)}]", "train.epochs=1"]
    train(config.resolve(sets=sets), tmp_path)
    result = cli("trace", "-w", tmp_path, "--section", QUERY, *sets_args(sets), "--quiet")
    assert result.exit_code == 0, result.output
    rows = load_influence(tmp_path / "trace" / QUERY / INFLUENCE_CSV)
    assert sorted(r["section"] for r in rows) == sorted(labelled)
