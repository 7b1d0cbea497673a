"""Shared fixtures: a tiny synthetic profile and the real CLI through typer's CliRunner."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from falsecli.core import config
from falsecli.cli import app

#: one intra-op thread for torch, set before anything imports it (so tests of config and CLI
#: parsing need no torch) and inherited by the CLI subprocesses: on 2 shared cores, OpenMP
#: threads spinning against other processes make 2 threads up to 10x slower than 1
os.environ["OMP_NUM_THREADS"] = "1"

#: ../shared beside the repository (CI has it there too)
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
F3_CROP = SHARED / "data" / "f3-crop.sgy"

#: a profile that trains in seconds on 2 CPU cores
TINY = [
    "data.synthetic.shape=[16,24,32]",
    "data.synthetic.test_shape=[8,24,32]",
    "model.aspp_channels=32",
    "train.epochs=3",
    "train.batch_size=4",
    "train.eval_batch_size=8",
    "train.device=cpu",
    "rank.min_pixels=5",
    "transfer.iterations=4",
    "transfer.crop=[32,24]",
    "transfer.batch_size=2",
    "transfer.channels=16",
    "transfer.style_dim=8",
    "transfer.sources=2",
    "transfer.per_source=3",
    "retrain.seeds=[0,1]",
    "retrain.epochs=2",
]


@pytest.fixture
def f3_crop() -> Path:
    """The real F3 SEG-Y crop; the test skips in a clone without ../shared (the files of
    tests/make_segy.py cover the SEG-Y reader there)."""
    if not F3_CROP.is_file():
        pytest.skip("../shared/data/f3-crop.sgy is absent (a clone without ../shared): the "
                    "check on real data is skipped; tests/make_segy.py files cover SEG-Y")
    return F3_CROP


def sets_args(sets: list[str]) -> list[str]:
    """``["a=1", "b=2"]`` -> ``["--set", "a=1", "--set", "b=2"]``."""
    return [arg for item in sets for arg in ("--set", item)]


@pytest.fixture
def tiny_cfg() -> config.Config:
    return config.resolve(sets=TINY)


@pytest.fixture
def cli():
    """Invoke the real CLI: ``cli("train", "-w", str(path), ...)`` -> click Result."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


#: folders of module- or session-scoped fixtures that tests share (see :func:`shared`)
_SHARED: list[Path] = []


def shared(folder: Path) -> Path:
    """Register ``folder``, made by a fixture of wider scope than a test, as shared: every
    test must leave it as it found it (a test that changes it works on a copy in its
    ``tmp_path``), else the outcome of later tests depends on the order they run in.
    Returns ``folder``."""
    _SHARED.append(Path(folder))
    return Path(folder)


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time (a hard-linked copy
    written through, rather than replaced, changes them too)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _shared_folders_unchanged() -> Iterator[None]:
    """Fail a test that added, removed or rewrote a file of a :func:`shared` folder. Wider
    fixtures are set up before this one, so a folder registered for this test is included."""
    before = {folder: _state(folder) for folder in _SHARED}
    yield
    for folder, state in before.items():
        after = _state(folder)
        changed = sorted(k for k in state.keys() | after.keys() if state.get(k) != after.get(k))
        assert not changed, (f"{folder}: the test changed the shared fixture's files "
                             f"{changed[:5]}: copy it to tmp_path before changing it")


def pytest_terminal_summary(terminalreporter, config) -> None:
    """The order of this run (pytest-random-order hides it under -q), to repeat a failure."""
    if config.pluginmanager.hasplugin("random_order"):
        from random_order.config import Config as RandomOrder

        order = RandomOrder(config)
        if order.is_enabled:
            terminalreporter.write_line(f"test order: --random-order-bucket={order.bucket_type} "
                                        f"--random-order-seed={order.seed}")
