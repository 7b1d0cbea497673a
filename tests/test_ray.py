"""``--executor ray`` on a local Ray instance: the same jobs as Ray tasks, a lost worker tried
again, an error of the run itself not, and a retraining run the same bytes as a local one."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Iterator

import pytest
from conftest import TINY, sets_args

from falsecli.core.errors import FalseCliError
from falsecli.core.jobs import Job
from falsecli.core.parallel import Parallel, run_jobs
from falsecli.core.rayrun import RETRIES

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'falsecli[ray]')")
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance for the module; its workers import this folder's helpers."""
    paths = [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = old


def _tries(folder: str, die_first: bool) -> int:
    """Count this try in a file; the first one is killed (``die_first``) or fails."""
    marks = Path(folder) / "tries"
    with open(marks, "a") as fh:
        fh.write("x")
    tries = len(marks.read_text())
    if tries == 1 and die_first:
        os.kill(os.getpid(), signal.SIGKILL)
    if not die_first:
        raise FalseCliError("config key 'x' is wrong; use y")
    return tries


def test_a_lost_worker_is_tried_again(local_ray: None, tmp_path: Path) -> None:
    results = run_jobs([Job("lost", _tries, (str(tmp_path), True))], Parallel("1", "ray"),
                       "test")
    assert results == {"lost": 2} and RETRIES >= 1


def test_an_error_of_the_run_is_one_line_and_not_tried_again(local_ray: None, tmp_path: Path
                                                             ) -> None:
    with pytest.raises(FalseCliError) as err:
        run_jobs([Job("bad", _tries, (str(tmp_path), False))], Parallel("1", "ray"), "test")
    assert "1 of 1 runs failed (bad: config key 'x' is wrong; use y)" in str(err.value)
    assert (tmp_path / "tries").read_text() == "x"


def test_retrain_on_ray_writes_what_a_local_run_writes(local_ray: None, cli, tmp_path: Path
                                                       ) -> None:
    base = tmp_path / "base"
    assert cli("train", "-w", base, *sets_args(TINY), "--quiet").exit_code == 0
    args = [*sets_args(TINY), "--aug", "flip", "--seeds", "1", "--quiet"]
    works = {name: tmp_path / name for name in ("local", "ray")}
    for name, work in works.items():
        shutil.copytree(base, work)
    assert cli("retrain", "-w", works["local"], *args, "--jobs", "1").exit_code == 0
    # 2 at a time on the 2 CPUs: one thread each, as the local run (conftest) has
    result = cli("retrain", "-w", works["ray"], *args, "--jobs", "2", "--executor", "ray")
    assert result.exit_code == 0, result.output
    run = "retrain/flip/seed1"
    for rel in ("model.pt", "tracking/correct.npy", "tracking/pred_last.npy", "eval.json"):
        assert (works["local"] / run / rel).read_bytes() == (works["ray"] / run / rel).read_bytes(), rel
