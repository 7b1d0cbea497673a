"""Malformed inputs of the commands beside the workflow (predict, export, trace, query, al,
show), through the real CLI, in test_malformed.py's named cases: outside files (SEG-Y, .npy,
masks) that are damaged or of the wrong kind, damaged artifacts, output folders in the way.
Each must fail with exit code 1 and one line on stderr naming the problem, without a
traceback, and leave the complete training run as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from pathlib import Path

import make_segy
import numpy as np
import pytest
from conftest import TINY, sets_args, shared
from test_malformed import Case, Damage, fails_in_one_line, nothing, put, replaced, run

SMALL = TINY + ["data.synthetic.shape=[12,13,29]", "data.synthetic.test_shape=[6,13,29]",
                "train.epochs=2", "train.keep_every=1", "heatmap.figures=0"]
ARGS = [*sets_args(SMALL), "--quiet"]
SHAPE = (6, 13, 29)  # a volume the tiny model predicts


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A workdir with a training run that kept its weights every epoch, heat maps, a
    ranking."""
    work = shared(tmp_path_factory.mktemp("base"))
    for command in ("train", "heatmap", "rank"):
        result = run(command, "-w", work, *ARGS)
        assert result.exit_code == 0, result.output
    return work


def seismic() -> np.ndarray:
    return np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)


def array(name: str, values: np.ndarray) -> Damage:
    """``{w}/in/<name>`` holding ``values`` (object arrays pickled, as numpy writes them)."""
    def damage(work: Path, stack: contextlib.ExitStack) -> None:
        path = work / "in" / name
        path.parent.mkdir(exist_ok=True)
        np.save(path, values, allow_pickle=values.dtype.hasobject)
    return damage


def segy_file(name: str) -> Damage:
    """``{w}/in/<name>.sgy``: the bad SEG-Y case ``name`` of tests/make_segy.py."""
    return lambda work, stack: make_segy.BAD[name](work / "in" / f"{name}.sgy")


def both(*damages: Damage) -> Damage:
    def damage(work: Path, stack: contextlib.ExitStack) -> None:
        for d in damages:
            d(work, stack)
    return damage


def folder_of_other_files(work: Path, stack: contextlib.ExitStack) -> None:
    put(work / "o" / "notes.txt", b"mine")


def out_locked_by_another(work: Path, stack: contextlib.ExitStack) -> None:
    """Hold the lock of ``{w}/o`` as another predict or export writing it would."""
    fh = stack.enter_context(open(work / ".o.lock", "a+"))
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


def without_kept_weights(work: Path, stack: contextlib.ExitStack) -> None:
    shutil.rmtree(work / "train" / "kept")


OBJECTS = np.array([[[1, "a"]]], dtype=object)
GOOD = array("s.npy", seismic())
PREDICT = ("predict", "--out", "{w}/o")
INPUT = (*PREDICT, "--input", "{w}/in/s.npy")
LABELS = (*INPUT, "--labels", "{w}/in/l.npy")
EXPORT = ("export", "--out", "{w}/o")
TRACE = ("trace", "--section", "inline_0000")
MASK = (*TRACE, "--mask", "{w}/in/m.npy")
CASES = [
    # ---- predict: outside volumes
    Case("predict header-only SEG-Y", segy_file("header_only"),
         (*PREDICT, "--input", "{w}/in/header_only.sgy"), "holds the file header but no traces"),
    Case("predict fixed-point SEG-Y", segy_file("fixed_point"),
         (*PREDICT, "--input", "{w}/in/fixed_point.sgy"), "sample format code 4"),
    Case("predict uneven SEG-Y traces", segy_file("uneven_traces"),
         (*PREDICT, "--input", "{w}/in/uneven_traces.sgy"), "its traces differ in length"),
    Case("predict truncated SEG-Y", segy_file("truncated"),
         (*PREDICT, "--input", "{w}/in/truncated.sgy"), "the file is truncated"),
    Case("predict object .npy", array("s.npy", OBJECTS), INPUT,
         "holds Python objects (dtype object), not numbers"),
    Case("predict complex .npy", array("s.npy", seismic().astype(np.complex64)), INPUT,
         "dtype complex64; expected real numbers"),
    Case("predict 2-D .npy", array("s.npy", seismic()[0]), INPUT, "(2-D); expected a 3-D"),
    Case("predict NaN seismic", array("s.npy", np.where(seismic() > 2, np.nan, seismic())),
         INPUT, "the seismic has NaN/Inf samples"),
    Case("predict too shallow", array("s.npy", seismic()[:, :, :5]), INPUT,
         "5 samples per trace, but the model"),
    Case("predict not a volume file", replaced("in/s.txt", b"1 2 3"),
         (*PREDICT, "--input", "{w}/in/s.txt"), "unsupported file type '.txt'"),
    Case("predict missing input", nothing, INPUT, "in/s.npy: missing"),
    # ---- predict: labels
    Case("predict labels outside the classes", both(GOOD, array("l.npy", np.full(
        SHAPE, 9, np.uint8))), LABELS, "label values 9 are outside the 6 classes"),
    Case("predict labels of another shape", both(GOOD, array("l.npy", np.zeros(
        (6, 13, 28), np.uint8))), LABELS, "differs from the seismic shape (6, 13, 29)"),
    Case("predict fractional labels", both(GOOD, array("l.npy", np.full(
        SHAPE, 0.5, np.float32))), LABELS, "non-integer or NaN values"),
    Case("predict object labels", both(GOOD, array("l.npy", OBJECTS)), LABELS,
         "l.npy: holds Python objects"),
    Case("predict --labels without --input", nothing, (*PREDICT, "--labels", "{w}/in/l.npy"),
         "--labels needs --input"),
    # ---- predict: the model and the output folder
    Case("predict junk model.pt", replaced("train/model.pt", b"junk" * 100), PREDICT,
         "model.pt: not a falsecli model file (not a torch file"),
    Case("predict other classes", nothing, (*PREDICT, "--set", "data.classes=[a,b]"),
         "in the workdir {w}"),
    Case("predict --out exists", folder_of_other_files, PREDICT, "o exists — use --force"),
    Case("predict --force on another folder", folder_of_other_files, (*PREDICT, "--force"),
         "holds no predict.json, so it is not a falsecli predict folder"),
    Case("predict --out being written", out_locked_by_another, PREDICT,
         "another falsecli process is writing"),
    # ---- export
    Case("export without heat maps", lambda work, stack: shutil.rmtree(work / "heatmap"),
         EXPORT, "no heat maps in"),
    Case("export empty forgetting.npz", replaced("heatmap/forgetting.npz", b""), EXPORT,
         "forgetting.npz: unreadable"),
    Case("export sections.json cut", replaced("train/tracking/sections.json", b"{"), EXPORT,
         "sections.json: unreadable or not JSON"),
    Case("export --force on another folder", folder_of_other_files, (*EXPORT, "--force"),
         "holds no export.json, so it is not a falsecli export folder"),
    Case("export --out being written", out_locked_by_another, EXPORT,
         "another falsecli process is writing"),
    # ---- trace
    Case("trace without --section", nothing, ("trace",), "which tracked section?"),
    Case("trace untracked section", nothing, ("trace", "--section", "inline_0099"),
         "inline_0099 is not a tracked section of train"),
    Case("trace without kept weights", without_kept_weights, TRACE, "kept no weights"),
    Case("trace empty kept weights", replaced("train/kept/epoch_0001.pt", b""), TRACE,
         "epoch_0001.pt: not a falsecli kept checkpoint (empty or cut short)"),
    Case("trace unknown class", nothing, (*TRACE, "--class", "granite"),
         "unknown class 'granite'"),
    Case("trace --class and --mask", nothing, (*MASK, "--class", "scruff"),
         "give --class or --mask, not both"),
    Case("trace missing mask", nothing, MASK, "--mask {w}/in/m.npy: missing"),
    Case("trace object mask", array("m.npy", np.zeros((29, 13), dtype=object)), MASK,
         "m.npy: holds Python objects"),
    Case("trace complex mask", array("m.npy", np.ones((29, 13), np.complex64)), MASK,
         "dtype complex64, not a mask"),
    Case("trace mask of another shape", array("m.npy", np.ones((3, 3), bool)), MASK,
         "shape [3, 3], but section inline_0000 is [29, 13]"),
    Case("trace mask not 0/1", array("m.npy", np.full((29, 13), 2)), MASK,
         "values other than 0/1"),
    Case("trace empty mask", replaced("in/m.npy", b""), MASK, "m.npy: empty file"),
    # ---- query and al
    Case("query without a pool", nothing, ("query",), "tracked no pool section"),
    Case("query empty switch.npy", replaced("train/tracking/switch.npy", b""), ("query",),
         "switch.npy: not a readable .npy file"),
    Case("query unknown run", nothing, ("query", "--run", "nope"), "config key 'query.run'"),
    Case("al more sections than the volume", nothing, ("al", "--initial", 4, "--budget", 50),
         "but the volume has only 19 training sections"),
    Case("al unknown strategy", nothing, ("al", "--strategies", "bogus"),
         "config key 'al.strategies[0]' is 'bogus'"),
    Case("al folder a file", replaced("al", b"x"),
         ("al", "--initial", 2, "--budget", 1, "--rounds", 1, "--epochs", 1),
         "Not a directory — a file is in the way"),
    # ---- show
    Case("show unknown stage", nothing, ("show", "nope"), "no stage 'nope'"),
    Case("show empty workdir", nothing, ("show", "-w", "{w}/empty"), "no stage in"),
    Case("show rank empty ranking.csv", replaced("rank/ranking.csv", b""), ("show", "rank"),
         "ranking.csv: no column class"),
    Case("show manifest a list", replaced("train/manifest.json", b"[1]"), ("show",),
         "a JSON list, not a manifest"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input_is_one_line(base, tmp_path, case: Case) -> None:
    work = fails_in_one_line(base, tmp_path, case, ARGS)
    # a refused predict or export leaves nothing beside its --out
    assert not list(work.glob(".o.*")) or case.name.endswith("being written")


def test_every_newer_command_has_malformed_cases() -> None:
    """At least three cases for each command beside the workflow."""
    commands = [c.args[0] for c in CASES]
    assert all(commands.count(c) >= 3 for c in ("predict", "export", "trace", "query", "al",
                                                 "show")), commands
