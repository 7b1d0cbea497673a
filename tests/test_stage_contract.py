"""The stage contract: a stage takes ``resume`` exactly when its Step declares that it resumes,
and the pipeline offers ``resume`` to those steps only."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from falsecli.core import config
from falsecli.stages import Step, al, export, pipeline, predict, query, show, trace

STEPS = pipeline.steps() + [trace.STEP]


@pytest.mark.parametrize("step", STEPS, ids=[s.name for s in STEPS])
def test_a_step_takes_resume_exactly_when_it_declares_it(step: Step) -> None:
    params = inspect.signature(step.run).parameters
    assert ("resume" in params) == step.resumes
    assert params["force"].kind is inspect.Parameter.KEYWORD_ONLY
    assert [s.name for s in STEPS if s.resumes] == ["train", "transfer", "retrain"]


@pytest.mark.parametrize("fn", [query.query, al.al, predict.predict, export.export, show.show,
                                pipeline.run])
def test_stages_without_a_checkpoint_of_their_own_take_no_resume(fn: Any) -> None:
    assert "resume" not in inspect.signature(fn).parameters


def test_the_pipeline_offers_resume_only_to_steps_that_resume(tmp_path: Path,
                                                              monkeypatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def plain(cfg: config.Config, workdir: Path, *, force: bool = False) -> dict[str, Any]:
        calls.append(("plain", {"force": force}))
        return {}

    def resumable(cfg: config.Config, workdir: Path, *, force: bool = False,
                  resume: bool = False) -> dict[str, Any]:
        calls.append(("resumable", {"force": force, "resume": resume}))
        return {}

    monkeypatch.setattr(pipeline, "steps", lambda: [
        Step("plain", plain, lambda cfg, workdir: []),
        Step("resumable", resumable, lambda cfg, workdir: [], resumes=True)])
    summary = pipeline.run(config.load_defaults(), tmp_path)
    assert calls == [("plain", {"force": False}),
                     ("resumable", {"force": False, "resume": True})]
    assert {name: s["status"] for name, s in summary["stages"].items()} == {
        "plain": "done", "resumable": "done"}


@pytest.mark.parametrize("profile", sorted(pipeline.PROFILES))
def test_every_profile_trains_the_transfer_identity_control_beside_transfer(
        profile: str, tmp_path: Path) -> None:
    """C3 and C4 judge transfer against its identity control: the demo (what most users read)
    and the study must train it, over the same seeds as transfer."""
    from falsecli.stages import retrain

    cfg = pipeline.demo_config(profile)
    folders = set(retrain.STEP.folders(cfg, tmp_path))
    seeds = cfg["retrain"]["seeds"]
    for method in ("transfer", "transfer-identity"):
        assert {f"retrain/{method}/seed{s}" for s in seeds} <= folders, (method, folders)


def test_each_workflow_folder_waits_for_what_it_reads_and_no_more(tmp_path: Path) -> None:
    """With --jobs, the baseline, flip and rotate runs go beside heatmap, rank and the
    generator's training; the runs on generated samples wait for transfer/; the report for
    every run."""
    planned, folders = pipeline.plan(pipeline.demo_config(), tmp_path)
    after = {job.name: set(job.after) for job in planned}
    assert after["train"] == set()
    assert after["heatmap"] == {"train"} and after["rank"] == {"train", "heatmap"}
    for run in ("retrain/none/seed1", "retrain/flip/seed0", "retrain/rotate/seed1"):
        assert after[run] == {"train"}, run
    for run in ("retrain/transfer/seed0", "retrain/transfer-identity/seed1"):
        assert after[run] == {"train", "transfer"}, run
    assert after["report"] == set(after) - {"report"}
    assert folders["retrain"] == [job.name for job in planned if job.name.startswith("retrain/")]
