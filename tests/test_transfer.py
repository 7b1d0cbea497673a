"""The transfer stage: its inputs, crops and targets on hand-made volumes, its metrics by hand,
and the CLI end to end on the tiny synthetic volume with a fabricated rank stage."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, sets_args
from scipy import ndimage

from falsecli.core import config
from falsecli.core.checkpoint import CHECKPOINT
from falsecli.core.errors import FalseCliError
from falsecli.core.files import write_text
from falsecli.core.manifest import Stage
from falsecli.core.swap import stage_run
from falsecli.data.dataset import Dataset, load_dataset
from falsecli.data.volumes import Volume
from falsecli.method import style, stylemeasure
from falsecli.method.pool import Pool
from falsecli.stages import transfer as tr

CLASSES = ["upper_ns", "middle_ns", "lower_ns", "rijnland_chalk", "scruff", "zechstein"]
SCRUFF = 4


# ---------------------------------------------------------------- units


def _dataset() -> Dataset:
    """7 inlines x 5 crosslines x 10 samples, every voxel a distinct value. Training sections:
    inlines 1-4, 6 (width 5) and crosslines 1-4 (width 7). Scruff lies in inlines 1 and 2 and
    in crosslines 1, 2 and 3."""
    seismic = np.arange(7 * 5 * 10, dtype=np.float32).reshape(7, 5, 10)
    labels = np.zeros((7, 5, 10), np.uint8)
    labels[1, 1, 4] = labels[2, 2, 4] = labels[1, 3, 6] = SCRUFF
    return Dataset(Volume("train", seismic, labels), [], CLASSES, 255, 5)


def test_pool_crops_are_true_crops_of_one_section_and_clipped() -> None:
    ds = _dataset()
    pool = Pool.load(ds, ds.sections("train"), torch.device("cpu"))
    assert [len(g) for g in pool.sections] == [5, 4]
    crop = pool.crop_size([8, 6])
    assert crop == (8, 5)  # the inlines are only 5 traces wide
    rng = np.random.default_rng(0)
    images = {s.name: ds.image(s) for s in ds.sections("train")}
    labels = {s.name: ds.label(s) for s in ds.sections("train")}
    for _ in range(5):
        img, lab = pool.sample(rng, crop, 3)
        assert img.shape == (3, 8, 5) and lab.shape == (3, 8, 5) and lab.dtype == torch.uint8
        for crop_img, crop_lab in zip(img.numpy(), lab.numpy()):
            # distinct voxel values: exactly one (section, offset) holds this crop
            hits = [(name, z, x) for name, full in images.items()
                    for z in range(full.shape[0] - 7) for x in range(full.shape[1] - 4)
                    if np.array_equal(full[z:z + 8, x:x + 5], crop_img)]
            assert len(hits) == 1
            name, z, x = hits[0]
            assert np.array_equal(crop_lab, labels[name][z:z + 8, x:x + 5])


def test_targets_are_the_most_common_shape_containing_the_class() -> None:
    ds = _dataset()
    pool = Pool.load(ds, ds.sections("train"), torch.device("cpu"))
    names = [s.name for s in pool.targets(SCRUFF, "scruff")]
    assert names == ["crossline_0001", "crossline_0002", "crossline_0003"]
    with pytest.raises(FalseCliError, match="no training section contains class 'zechstein'"):
        pool.targets(5, "zechstein")
    # no training section at all (e.g. data.val_every 1): the same one-line error
    with pytest.raises(FalseCliError, match="no training section contains class 'scruff'"):
        Pool.load(ds, [], torch.device("cpu")).targets(SCRUFF, "scruff")


def test_targets_are_all_used_once_before_any_twice() -> None:
    rng = np.random.default_rng(0)
    picks = style.pick_targets(rng, 3, 8)
    assert len(picks) == 8
    for start in (0, 3):  # two full rounds, then a partial one without repeats
        assert sorted(picks[start:start + 3].tolist()) == [0, 1, 2]
    assert len(set(picks[6:].tolist())) == 2
    assert len(set(style.pick_targets(rng, 10, 4).tolist())) == 4  # distinct when n >= count


def test_change_metrics_by_hand() -> None:
    s = style.Samples(source=["a", "a", "b"], inside=[2.0, 4.0, 1.0], outside=[1.0, 1.0, 0.5],
                      inside_target=[3.0, 3.0, 6.0], outside_target=[1.0, 2.0, 0.0],
                      amplitude_outside=[2.0, 2.0, 0.5])
    m = style.change_metrics(s)
    assert m["class_local_change_ratio"] == pytest.approx((2 + 4 + 2) / 3)
    assert m["change_inside"] == pytest.approx(7 / 3)
    assert m["change_outside"] == pytest.approx(2.5 / 3)
    assert m["class_local_change_ratio_per_source"] == {"a": 3.0, "b": 2.0}
    assert m["change_inside_vs_target"] == pytest.approx(4.0)
    assert m["change_outside_vs_target"] == pytest.approx(1.0)
    assert m["class_local_change_ratio_vs_target"] == pytest.approx(4.0)
    assert m["relative_change_outside"] == pytest.approx(1.0 / (4.5 / 3))
    kept = style.Samples(inside_target=[1.0], outside_target=[0.0], amplitude_outside=[0.0])
    assert style.target_change_metrics(kept) == {
        "change_inside_vs_target": 1.0, "change_outside_vs_target": 0.0,
        "class_local_change_ratio_vs_target": None, "relative_change_outside": None}


def test_sample_changes_are_measured_against_reconstruction_and_target() -> None:
    s = style.Samples()
    inside = np.array([[True, False], [False, False]])
    target = np.array([[1.0, -2.0], [4.0, 0.0]])
    source = stylemeasure.describe(np.array([[3.0]]), np.array([[True]]))
    s.add(np.array([[3.0, -1.0], [4.0, 3.0]]), np.zeros((2, 2), np.uint8), "a", "t", target,
          reference=np.array([[0.0, -1.0], [5.0, 3.0]]), inside=inside, source_style=source)
    assert (s.inside, s.outside) == ([3.0], [1 / 3])
    assert (s.inside_target, s.outside_target) == ([2.0], [4 / 3])
    assert s.amplitude_outside == [2.0]
    # the class pixel took the source's value: all the way to its style (amplitude 1 vs 3:
    # |1 - 3| / (1 + 3), the one component that differs, of three)
    assert s.style_moved == [1.0] and s.style_to_source == [0.0]
    assert s.style_target_to_source == [pytest.approx(0.5 / 3)]


class _FakeTransferer:
    """Codes a pure function of the image (row c, entry d: the image's mean + c * dim + d, so
    every row of every section differs); each generation is recorded, and its image holds
    100 * call + row, so that a sample says which call and row made it."""

    def __init__(self, n_classes: int, dim: int) -> None:
        self.grid = torch.arange(n_classes * dim, dtype=torch.float64).reshape(n_classes, dim)
        self.calls: list[tuple[np.ndarray, torch.Tensor, int]] = []

    def codes(self, images: np.ndarray, labels: np.ndarray) -> torch.Tensor:
        means = torch.from_numpy(images.astype(np.float64).mean(axis=(1, 2)))
        return means[:, None, None] + self.grid.unsqueeze(0)

    def generate(self, labels: np.ndarray, codes: torch.Tensor, noise_seed: int) -> np.ndarray:
        self.calls.append((labels.copy(), codes.clone(), noise_seed))
        call = len(self.calls) - 1
        rows = np.arange(len(labels), dtype=np.float32)[:, None, None]
        return 100.0 * call + rows + np.zeros(labels.shape, np.float32)


def test_transfer_swaps_only_the_class_code_and_identity_keeps_every_code() -> None:
    """Every generation of a transfer gets the target's own codes bit for bit but row k, which
    is the source's; its identity sample comes from the same target, labels and noise with
    the target's own codes, in the same order."""
    ds = _dataset()
    fake = _FakeTransferer(len(CLASSES), 3)
    targets = Pool.load(ds, ds.sections("train"), torch.device("cpu")).targets(SCRUFF, "scruff")
    sources = ds.sections("val")[:2]
    samples, identity, codes, firsts = style.generate_samples(
        fake, ds, SCRUFF, sources, targets, per_source=3, batch=2, seed=7)
    by_name = {s.name: s for s in [*ds.sections("train"), *ds.sections("val")]}

    def own(name: str) -> torch.Tensor:
        sec = by_name[name]
        return fake.codes(ds.image(sec)[None], ds.label(sec)[None])[0]

    others = [c for c in range(len(CLASSES)) if c != SCRUFF]
    assert len(samples.images) == len(identity.images) == 6
    assert identity.target == samples.target and identity.source == samples.source
    for i, (src, tgt) in enumerate(zip(samples.source, samples.target)):
        t_call, t_row = divmod(int(samples.images[i][0, 0]), 100)
        i_call, i_row = divmod(int(identity.images[i][0, 0]), 100)
        t_labels, t_codes, t_noise = fake.calls[t_call]
        i_labels, i_codes, i_noise = fake.calls[i_call]
        assert t_call != i_call and t_noise == i_noise and t_row == i_row
        assert np.array_equal(t_labels[t_row], ds.label(by_name[tgt]))
        assert np.array_equal(i_labels[i_row], ds.label(by_name[tgt]))
        assert np.array_equal(samples.labels[i], identity.labels[i])
        mine = own(tgt)
        assert torch.equal(t_codes[t_row, others], mine[others])
        assert torch.equal(t_codes[t_row, SCRUFF], own(src)[SCRUFF])
        assert not torch.equal(t_codes[t_row, SCRUFF], mine[SCRUFF])
        assert torch.equal(i_codes[i_row], mine)
    assert [torch.equal(c, own(s.name)[SCRUFF]) for c, s in zip(codes, sources)] == [True] * 2
    assert [f.name for f in firsts] == [samples.target[0], samples.target[3]]


def _distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest pixel of ``mask``, by brute force."""
    ys, xs = np.nonzero(mask)
    yy, xx = np.indices(mask.shape)
    return np.sqrt((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2).min(axis=-1)


def test_composite_keeps_the_target_away_from_the_class() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((20, 30), bool)
    mask[8:11, 5:9] = True
    mask[3, 25] = True
    generated = rng.standard_normal((2, 20, 30)).astype(np.float32)
    target = rng.standard_normal((2, 20, 30)).astype(np.float32)
    masks = np.stack([mask, np.zeros_like(mask)])  # the second target lacks the class
    out = style.Composite(dilate=3, feather=2)(generated, target, masks)
    dist = _distance(mask)
    assert np.array_equal(out[0][dist >= 5], target[0][dist >= 5])  # beyond dilate + feather
    assert np.array_equal(out[0][dist <= 3], generated[0][dist <= 3])  # the dilated class
    assert np.array_equal(out[1], target[1])
    blend = (dist > 3) & (dist < 5)
    weight = style.Composite(dilate=3, feather=2).weights(mask)
    assert blend.sum() > 20 and ((weight[blend] > 0) & (weight[blend] < 1)).all()
    assert np.allclose(weight, np.clip((5 - dist) / 2, 0, 1), atol=1e-6)  # linear in distance
    order = np.argsort(dist.ravel(), kind="stable")
    assert (np.diff(weight.ravel()[order]) <= 1e-6).all()  # monotone: less generated farther
    assert np.allclose(out[0], weight * generated[0] + (1 - weight) * target[0], atol=1e-6)
    hard = style.Composite(dilate=1, feather=0)(generated[:1], target[:1], mask[None])[0]
    assert np.array_equal(hard, np.where(dist <= 1, generated[0], target[0]))


# ---------------------------------------------------------------- the stage


def _fabricate_rank(workdir: Path, cfg: config.Config, split: str = "val") -> list[str]:
    """A complete rank stage whose scruff rows are the two sections of ``split`` with the
    most scruff (a zechstein row first, which must be skipped)."""
    ds = load_dataset(cfg)
    by_scruff = sorted(ds.sections(split), key=lambda s: -int((ds.label(s) == SCRUFF).sum()))
    sources = [s.name for s in by_scruff[:2]]
    rows = ["class,rank,section,density,events,class_pixels", "zechstein,1,inline_0000,5,5,1"]
    rows += [f"scruff,{i + 1},{name},{1.0 / (i + 1)},3,9" for i, name in enumerate(sources)]
    with stage_run(workdir, "rank", cfg) as run:
        write_text(run.out("ranking.csv"), "\n".join(rows) + "\n")
    return sources


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(cli, workdir: Path, *extra: str):
    return cli("transfer", "-w", workdir, "--json", *sets_args(TINY), *extra)


def test_transfer_cli_end_to_end(cli, tiny_cfg, tmp_path: Path) -> None:
    w = tmp_path / "w"
    sources = _fabricate_rank(w, tiny_cfg)
    result = _run(cli, w)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stage"] == "transfer" and summary["generator"] == "trained"
    out = w / "transfer"
    assert sorted(summary["outputs"]) == sorted(str(out / p) for p in Stage(w, "transfer")
                                                .manifest()["outputs"])

    # samples.npz, exactly as SPEC §3
    ds = load_dataset(tiny_cfg)
    with np.load(out / "samples.npz", allow_pickle=False) as npz:
        s = {k: npz[k] for k in npz.files}
    assert set(s) == {"images", "labels", "source", "target"}
    n = 2 * 3  # transfer.sources x transfer.per_source in TINY
    assert s["images"].dtype == np.float32 and s["labels"].dtype == np.uint8
    assert s["images"].shape == s["labels"].shape and s["images"].shape[0] == n
    assert np.isfinite(s["images"]).all() and s["images"].std() > 0
    assert list(s["source"]) == [sources[0]] * 3 + [sources[1]] * 3
    train = {sec.name: sec for sec in ds.sections("train")}
    for target, labels in zip(s["target"], s["labels"]):
        sec = train[str(target)]  # targets are training sections...
        assert np.array_equal(labels, ds.label(sec))  # ...whose labels the samples carry
        assert (labels == SCRUFF).any() and sec.shape == s["images"].shape[1:]

    # the identity samples: the same targets, labels and order, their own style codes
    with np.load(out / tr.IDENTITY_SAMPLES, allow_pickle=False) as npz:
        ident = {k: npz[k] for k in npz.files}
    assert set(ident) == set(s) and ident["images"].shape == s["images"].shape
    for key in ("labels", "source", "target"):
        assert np.array_equal(ident[key], s[key]), key
    assert not np.array_equal(ident["images"], s["images"])

    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("reconstruction_error", "reconstruction_baseline", "class_local_change_ratio",
                "change_inside", "change_outside", "training", "samples", "sources"):
        assert key in metrics
    # the changes against the target, recomputed from the files
    images = {str(t): ds.image(train[str(t)]) for t in s["target"]}
    for method, got, arrays in (("transfer", metrics, s),
                                ("transfer-identity", metrics["identity"], ident)):
        diff = [np.abs(a - images[str(t)]) for a, t in zip(arrays["images"], arrays["target"])]
        inside = [lab == SCRUFF for lab in arrays["labels"]]
        # changes.csv: the same per sample, in the samples file's order
        rows = tr.load_changes(w, method)
        assert [(r["source"], r["target"]) for r in rows] == list(zip(arrays["source"],
                                                                        arrays["target"]))
        with open(w / "transfer" / tr.CHANGES, newline="") as fh:  # line numbers: indices
            raw = [r for r in csv.DictReader(fh) if r["method"] == method]
        val = {x.name: x for x in ds.sections("val")}
        for r in raw:
            for role, known in (("source", val), ("target", train)):
                x = known[r[role]]
                assert (r[f"{role}_inline"], r[f"{role}_crossline"]) == (
                    (str(x.index), "") if x.axis == "inline" else ("", str(x.index)))
        for row, d, m, t in zip(rows, diff, inside, arrays["target"]):
            assert row["change_inside_vs_target"] == pytest.approx(d[m].mean(), rel=1e-4)
            assert row["change_outside_vs_target"] == pytest.approx(d[~m].mean(), rel=1e-4)
            assert row["amplitude_outside"] == pytest.approx(
                np.abs(images[str(t)])[~m].mean(), rel=1e-4)
        assert np.mean([r["change_inside"] for r in rows]) == pytest.approx(
            got.get("change_inside", 0.0), rel=1e-4, abs=1e-9)
        out_t = np.mean([d[~m].mean() for d, m in zip(diff, inside)])
        in_t = np.mean([d[m].mean() for d, m in zip(diff, inside)])
        amp = np.mean([np.abs(images[str(t)])[~m].mean()
                       for t, m in zip(arrays["target"], inside)])
        assert got["change_outside_vs_target"] == pytest.approx(out_t, rel=1e-4)
        assert got["change_inside_vs_target"] == pytest.approx(in_t, rel=1e-4)
        assert got["class_local_change_ratio_vs_target"] == pytest.approx(in_t / out_t, rel=1e-4)
        assert got["relative_change_outside"] == pytest.approx(out_t / amp, rel=1e-4)
    assert metrics["composite"] is False
    assert metrics["samples"] == n and metrics["sources"] == sources
    assert metrics["reconstruction_error"] > 0 and metrics["class_local_change_ratio"] > 0
    assert metrics["reconstruction_sections"] == [v.name for v in ds.sections("val")]
    for name in ["fig3.png", *(f"fig3_{src}.png" for src in sources), "losses.png"]:
        assert (out / "figures" / name).stat().st_size > 1000
    assert (out / tr.FIG3_STYLE).stat().st_size > 1000
    assert metrics["method"] == "sean" and "style_moved" in metrics["identity"]
    assert not (out / CHECKPOINT).exists()

    # complete: refuses without --force
    again = _run(cli, w)
    assert again.exit_code == 1 and "already complete" in again.stderr

    # an interrupted stage (no manifest) with the same training config reuses the generator,
    # and sampling is deterministic
    gen_sha = _sha(out / tr.GENERATOR)
    (out / "manifest.json").unlink()
    reused = _run(cli, w)
    assert reused.exit_code == 0 and json.loads(reused.stdout)["generator"] == "reused"
    assert _sha(out / tr.GENERATOR) == gen_sha
    with np.load(out / "samples.npz") as npz:
        assert np.array_equal(npz["images"], s["images"])

    # sampling keys do not retrain; training keys do
    (out / "manifest.json").unlink()
    fewer = _run(cli, w, "--per-source", "2")
    assert json.loads(fewer.stdout)["generator"] == "reused"
    with np.load(out / "samples.npz") as npz:
        assert npz["images"].shape[0] == 4
    # compositing is a sampling key: far from the class the samples are the targets' pixels
    (out / "manifest.json").unlink()
    comp = _run(cli, w, "--set", "transfer.composite=true")
    assert json.loads(comp.stdout)["generator"] == "reused"
    assert json.loads((out / "metrics.json").read_text())["composite"] is True
    for name in (tr.SAMPLES, tr.IDENTITY_SAMPLES):
        with np.load(out / name) as npz:
            for image, labels, target in zip(npz["images"], npz["labels"], npz["target"]):
                far = ndimage.distance_transform_edt(labels != SCRUFF) >= 3 + 2
                assert far.any() and np.array_equal(image[far], images[str(target)][far])
    (out / "manifest.json").unlink()
    other = _run(cli, w, "--set", "transfer.lr=0.001")
    assert json.loads(other.stdout)["generator"] == "trained"
    assert _sha(out / tr.GENERATOR) != gen_sha

    # --force retrains from scratch: the same seed gives the same generator and samples
    forced = _run(cli, w, "--force")
    assert forced.exit_code == 0 and json.loads(forced.stdout)["generator"] == "trained"
    with np.load(out / "samples.npz") as npz:
        assert np.allclose(npz["images"], s["images"], atol=1e-5)


def test_a_test_section_is_never_a_style_source(cli, tiny_cfg, tmp_path: Path) -> None:
    """A ranking that names a test section (hand-made: rank itself ranks only validation
    sections) is refused before any training, in one line naming the section."""
    w = tmp_path / "w"
    leaked = _fabricate_rank(w, tiny_cfg, split="test1")[0]
    result = _run(cli, w)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and leaked in lines[0] and "test section" in lines[0], result.stderr
    assert not Stage(w, "transfer").is_complete()
    assert not (w / "transfer" / tr.GENERATOR).exists()


def _kill_at_step(step: int, cfg: config.Config, workdir: Path,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the stage and interrupt it (KeyboardInterrupt) at generator training step ``step``."""
    real_step, calls = style.train_step, []

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(style, "train_step", dies)
        tr.transfer(cfg, workdir)


def _assert_same_generator(whole: Path, broken: Path) -> None:
    """The resumed training's generator is the uninterrupted one's."""
    a = torch.load(whole / "transfer" / tr.GENERATOR, weights_only=True)
    b = torch.load(broken / "transfer" / tr.GENERATOR, weights_only=True)
    for part in ("encoder", "generator"):
        for key in a[part]:
            assert torch.allclose(a[part][key], b[part][key], atol=1e-6), key
    assert a["training"]["history"] == b["training"]["history"]


def test_interrupted_training_resumes_where_it_stopped(tiny_cfg, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config.merge(tiny_cfg, {"transfer": {"iterations": 5, "checkpoint_every": 2,
                                               "sources": 1, "per_source": 1}})
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    for w in (whole, broken):
        _fabricate_rank(w, cfg)
    assert tr.transfer(cfg, whole)["generator"] == "trained"

    _kill_at_step(4, cfg, broken, monkeypatch)
    assert not Stage(broken, "transfer").is_complete()
    ckpt = torch.load(broken / "transfer" / CHECKPOINT, weights_only=True)
    assert ckpt["step"] == 2

    assert tr.transfer(cfg, broken, resume=True)["generator"] == "resumed"
    _assert_same_generator(whole, broken)


def test_perceptual_loss_reads_the_trained_network_and_resumes(cli, tiny_cfg, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """``transfer.perceptual_weight`` > 0 through the real CLI: train/ becomes an upstream
    result (refused without it), the loss is trained and reported, the generator records
    the network it was trained through, and an interrupted training resumes to the same
    generator (the backbone is reloaded, not checkpointed)."""
    weight = ["--set", "transfer.perceptual_weight=1.0"]
    w = tmp_path / "w"
    _fabricate_rank(w, tiny_cfg)
    refused = _run(cli, w, *weight)
    assert refused.exit_code == 1 and "train" in refused.stderr
    assert "Traceback" not in refused.output
    trained = cli("train", "-w", w, *sets_args(TINY))
    assert trained.exit_code == 0, trained.output
    result = _run(cli, w, *weight)
    assert result.exit_code == 0, result.output
    assert set(Stage(w, "transfer").manifest()["inputs"]) == {"rank", "train"}
    metrics = json.loads((w / "transfer" / "metrics.json").read_text())
    assert all(row["perceptual"] > 0 for row in metrics["training"]["history"])
    stored = torch.load(w / "transfer" / tr.GENERATOR, weights_only=True)
    assert stored["config"]["backbone"] == {"train": Stage(w, "train").digest()}
    assert tr.STEP.upstream(config.resolve(sets=[*TINY, "transfer.perceptual_weight=1.0"]),
                            w) == ["rank", "train"]
    assert tr.STEP.upstream(tiny_cfg, w) == ["rank"]

    cfg = config.merge(tiny_cfg, {"transfer": {"iterations": 5, "checkpoint_every": 2,
                                               "sources": 1, "per_source": 1,
                                               "perceptual_weight": 1.0}})
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    for folder in (whole, broken):
        _fabricate_rank(folder, cfg)
        shutil.copytree(w / "train", folder / "train")
    assert tr.transfer(cfg, whole)["generator"] == "trained"
    _kill_at_step(4, cfg, broken, monkeypatch)
    assert tr.transfer(cfg, broken, resume=True)["generator"] == "resumed"
    _assert_same_generator(whole, broken)


def test_bad_options_and_missing_rows_fail_in_one_line(cli, tiny_cfg, tmp_path: Path) -> None:
    bad = _run(cli, tmp_path, "--per-source", "0")
    assert bad.exit_code == 1 and "transfer.per_source" in bad.stderr
    _fabricate_rank(tmp_path, tiny_cfg)
    missing = _run(cli, tmp_path, "--class", "upper_ns")
    assert missing.exit_code == 1
    assert "rank --class upper_ns" in missing.stderr and "Traceback" not in missing.output


def test_interrupted_training_continues_only_with_resume(cli, tiny_cfg, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupted generator training is refused in one line without --resume, and with
    other training keys; --force starts over."""
    cfg = config.merge(tiny_cfg, {"transfer": {"iterations": 5, "checkpoint_every": 2}})
    _fabricate_rank(tmp_path, cfg)
    _kill_at_step(3, cfg, tmp_path, monkeypatch)
    out = tmp_path / "transfer"
    sets = ["--set", "transfer.iterations=5", "--set", "transfer.checkpoint_every=2"]

    refused = _run(cli, tmp_path, *sets)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert (f"an interrupted run is in {out} (step 2 of 5) — use --resume to continue or "
            "--force to start over") in refused.stderr
    assert (out / CHECKPOINT).is_file()

    other = _run(cli, tmp_path, *sets, "--set", "transfer.lr=0.5", "--resume")
    assert other.exit_code == 1 and "transfer.lr=0.0002, not 0.5" in other.stderr

    forced = _run(cli, tmp_path, *sets, "--force", "--resume")
    assert forced.exit_code == 0 and json.loads(forced.stdout)["generator"] == "trained"
    assert not (out / CHECKPOINT).exists()


def test_retrain_transfer_identity_trains_on_the_identity_samples(cli, tiny_cfg,
                                                                  tmp_path: Path) -> None:
    """``retrain --aug transfer-identity`` adds transfer/samples_identity.npz to the pool (not
    samples.npz: the two files differ in size here) and trains without augmentation."""
    rng = np.random.default_rng(0)
    ds = load_dataset(tiny_cfg)
    shape = ds.sections("train")[-1].shape
    with stage_run(tmp_path, "transfer", tiny_cfg) as run:
        for name, n in ((tr.SAMPLES, 5), (tr.IDENTITY_SAMPLES, 3)):
            np.savez(run.out(name), images=rng.standard_normal((n, *shape)).astype(np.float32),
                     labels=rng.integers(0, 6, (n, *shape)).astype(np.uint8),
                     source=np.array(["a"] * n), target=np.array(["b"] * n))
    assert tr.METHOD_SAMPLES == {"transfer": tr.SAMPLES, "transfer-identity": tr.IDENTITY_SAMPLES}
    result = cli("retrain", "-w", tmp_path, "--json", *sets_args(TINY), "--aug",
                 "transfer-identity", "--seeds", "0", "--epochs", "1")
    assert result.exit_code == 0, result.output
    (run_summary,) = json.loads(result.stdout)["runs"]
    assert run_summary["run"] == "retrain/transfer-identity/seed0"
    assert run_summary["train_samples"] == len(ds.sections("train")) + 3
    manifest = Stage(tmp_path, "retrain/transfer-identity/seed0").manifest()
    assert manifest["config"]["train"]["aug"] == "none"
    assert set(manifest["inputs"]) == {"transfer"}


def test_statistics_transfer_needs_no_generator(cli, tiny_cfg, tmp_path: Path) -> None:
    """``transfer.method: statistics``: no generator; the identity samples are the targets,
    the samples keep the targets beyond the class's feather, and changes.csv's style_moved is
    the descriptor's, recomputed from the files."""
    w = tmp_path / "w"
    sources = _fabricate_rank(w, tiny_cfg)
    result = _run(cli, w, "--set", "transfer.method=statistics")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["method"], summary["generator"]) == ("statistics", "none")
    out = w / "transfer"
    assert not (out / tr.GENERATOR).exists() and (out / tr.FIG3_STYLE).stat().st_size > 1000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reconstruction_error"] is None and metrics["composite"] is True
    assert metrics["identity"]["style_moved"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["style_moved"] > 0.3
    ds = load_dataset(tiny_cfg)
    train = {sec.name: sec for sec in ds.sections("train")}
    src = {s.name: s for s in ds.sections("val")}
    rows = tr.load_changes(w, "transfer")
    with np.load(out / tr.SAMPLES) as npz, np.load(out / tr.IDENTITY_SAMPLES) as ident:
        assert list(npz["source"]) == [sources[0]] * 3 + [sources[1]] * 3
        for image, same, labels, name, source, row in zip(
                npz["images"], ident["images"], npz["labels"], npz["target"], npz["source"],
                rows):
            target = ds.image(train[str(name)])
            assert np.array_equal(same, target)  # the identity control: the target itself
            # only the class and its feather change (composite_dilate is sean's alone)
            feather = tiny_cfg["transfer"]["composite_feather"]
            far = ndimage.distance_transform_edt(labels != SCRUFF) >= feather
            assert np.array_equal(image[far], target[far])
            section = src[str(source)]
            want = stylemeasure.score(image, target, labels == SCRUFF, stylemeasure.describe(
                ds.image(section), ds.label(section) == SCRUFF))
            assert row["style_moved"] == pytest.approx(want.moved, rel=1e-5)
            assert row["style_target_to_source"] == pytest.approx(want.target_to_source,
                                                                  rel=1e-5)
