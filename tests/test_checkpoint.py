"""core.checkpoint: the random state a checkpoint carries, and reading bad files in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from falsecli.core import checkpoint
from falsecli.core.errors import FalseCliError


def _draws(gens: dict[str, torch.Generator]) -> list[torch.Tensor]:
    return [torch.rand(5), *(torch.rand(5, generator=g) for g in gens.values())]


def test_rng_capture_and_restore_round_trip(tmp_path: Path) -> None:
    """Draws after a restore repeat the draws after the capture: torch's global state and
    every named generator, also through a saved and loaded checkpoint."""
    torch.manual_seed(3)
    gens = {"order": torch.Generator().manual_seed(1), "aug": torch.Generator().manual_seed(2)}
    _draws(gens)  # somewhere in the middle of their streams
    state = checkpoint.capture_rng(torch.device("cpu"), gens)
    checkpoint.save(tmp_path / "ckpt.pt", {"rng": state})
    first = _draws(gens)
    _draws(gens)  # move on, then go back

    checkpoint.restore_rng(state, torch.device("cpu"), gens)
    assert all(torch.equal(a, b) for a, b in zip(first, _draws(gens)))
    loaded = checkpoint.load(tmp_path / "ckpt.pt", "checkpoint", "fix", keys=("rng",))["rng"]
    checkpoint.restore_rng(loaded, torch.device("cpu"), gens)
    assert all(torch.equal(a, b) for a, b in zip(first, _draws(gens)))
    with pytest.raises(ValueError, match="reserved"):
        checkpoint.capture_rng(torch.device("cpu"), {"torch": torch.Generator()})


def test_unreadable_or_foreign_files_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(FalseCliError, match="missing — fix it"):
        checkpoint.load(path, "checkpoint", "fix it")
    path.write_bytes(b"not a torch file")
    with pytest.raises(FalseCliError, match="not a falsecli checkpoint .* — fix it"):
        checkpoint.load(path, "checkpoint", "fix it")
    checkpoint.save(path, {"epoch": 1, "config": {"data": 1}})
    with pytest.raises(FalseCliError, match=r"it holds \['config', 'epoch'\]"):
        checkpoint.load(path, "checkpoint", "fix it", sections=("data",))
    assert checkpoint.load(path, "checkpoint", "fix it", keys=("epoch",))["epoch"] == 1


@pytest.mark.parametrize("resume, force, continues", [
    (False, False, False), (True, False, False), (False, True, False), (True, True, True)])
def test_a_killed_redo_continues_only_with_force_and_resume(tmp_path: Path, resume: bool,
                                                            force: bool, continues: bool
                                                            ) -> None:
    """A complete stage with an interrupted redo (a checkpoint in its redo folder): only
    --force --resume continues the redo; --force starts it over; neither touches it."""
    from falsecli.core.manifest import Stage
    from falsecli.core.swap import stage_run

    with stage_run(tmp_path, "train", {}):
        pass
    stage = Stage(tmp_path, "train")
    stage.redo_path.mkdir(parents=True)
    (stage.redo_path / checkpoint.CHECKPOINT).write_bytes(b"x")
    assert checkpoint.interrupted(stage, resume=resume, force=force,
                                  progress=lambda path: "epoch 1") is continues
