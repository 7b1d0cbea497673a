"""``--jobs``: independent runs in processes of their own, in order where they depend on each
other, failures told per run while the others finish, and the same results as one at a time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, sets_args

from falsecli.core import jobs, parallel
from falsecli.core.errors import FalseCliError
from falsecli.core.jobs import Job
from falsecli.core.parallel import Parallel, resolve_jobs, run_jobs
from falsecli.method.model import load_model


def _stamp(folder: str, name: str, seconds: float) -> dict[str, float]:
    """A job that takes ``seconds`` and says when it ran, with how many threads."""
    t0 = time.time()
    time.sleep(seconds)
    out = {"start": t0, "end": time.time(), "threads": torch.get_num_threads(),
           "omp": int(os.environ["OMP_NUM_THREADS"]), "pid": os.getpid()}
    (Path(folder) / f"{name}.json").write_text(json.dumps(out))
    return out


def _fail(message: str) -> None:
    raise FalseCliError(message)


def _killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_resolve_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_jobs("3", "cpu") == 3
    monkeypatch.setattr(parallel, "cores", lambda: 2)
    assert resolve_jobs("auto", "cpu") == 2
    monkeypatch.setattr(parallel, "cores", lambda: 16)
    assert resolve_jobs("auto", "cpu") == parallel.AUTO_CPU_JOBS
    for bad in ("0", "-1", "two"):
        with pytest.raises(FalseCliError, match=f"--jobs '{bad}'"):
            resolve_jobs(bad, "cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")  # a torchrun rank is one process of one run
    assert resolve_jobs("auto", "cpu") == 1


def test_jobs_run_side_by_side_and_after_what_they_wait_for(tmp_path: Path) -> None:
    planned = [Job("a", _stamp, (str(tmp_path), "a", 1.5)),
               Job("b", _stamp, (str(tmp_path), "b", 0.1)),
               Job("c", _stamp, (str(tmp_path), "c", 0.1), after=("a", "not-a-job"))]
    results = run_jobs(planned, Parallel("2"), "test")
    assert list(results) != [] and set(results) == {"a", "b", "c"}
    a, b, c = (results[k] for k in "abc")
    assert b["start"] < a["end"]  # side by side
    assert c["start"] >= a["end"]  # after the job it waits for
    # every run has its share of the cores, c too though it runs alone: a run's numbers
    # depend on its thread count, and must not depend on what ran beside it
    half = max(1, jobs.cores() // 2)
    assert all(r["threads"] == r["omp"] == half for r in (a, b, c))


def test_a_failed_run_is_one_line_and_the_others_finish(tmp_path: Path) -> None:
    planned = [Job("bad", _fail, ("config key 'x' is wrong; use y",)),
               Job("good", _stamp, (str(tmp_path), "good", 0.5)),
               Job("later", _stamp, (str(tmp_path), "later", 0.1), after=("bad",))]
    with pytest.raises(FalseCliError) as err:
        run_jobs(planned, Parallel("2"), "test")
    text = str(err.value)
    assert "2 of 3 runs failed" in text and "\n" not in text
    assert "bad: config key 'x' is wrong; use y" in text and "later: not run: bad failed" in text
    assert (tmp_path / "good.json").is_file() and not (tmp_path / "later.json").exists()


def _bug() -> None:
    raise ZeroDivisionError("a bug")


def test_workers_are_kept_for_the_next_run_and_retired_by_a_bug(tmp_path: Path) -> None:
    """A batch pays a worker's start once, not once per run; a run refused by falsecli's own
    checks keeps its worker, one that failed otherwise (a bug: its state may be broken) does
    not."""
    planned = [Job("a", _stamp, (str(tmp_path), "a", 0.1)),
               Job("b", _stamp, (str(tmp_path), "b", 0.1), after=("a",)),
               Job("c", _stamp, (str(tmp_path), "c", 0.1), after=("b",))]
    results = run_jobs(planned, Parallel("2"), "test")
    assert results["a"]["pid"] == results["b"]["pid"] == results["c"]["pid"] != os.getpid()
    runner = jobs.LocalRunner(1, "cpu")
    try:
        pids = []
        for job, outcome in ((Job("refused", _fail, ("wrong",)), ("failed", "wrong")),
                             (Job("bug", _bug), ("failed", "ZeroDivisionError: a bug"))):
            pipe = runner.start(job)
            pids.append(runner.workers[0][0].pid)
            assert runner.wait([pipe]) == [pipe] and runner.outcome(pipe) == outcome
        good = runner.start(Job("good", _stamp, (str(tmp_path), "good", 0.1)))
        runner.wait([good])
        status, value = runner.outcome(good)
        assert status == "done"
        assert pids[0] == pids[1] != value["pid"]  # kept after the refusal, not after the bug
    finally:
        runner.close()
    assert runner.workers == {}


def test_a_batch_error_names_the_first_failures_in_one_line(tmp_path: Path) -> None:
    # a stage's error names its run already: the batch's names it once
    planned = [Job(f"r{k}", _fail, (f"r{k}: reason {k}" if k % 2 else f"reason {k}",))
               for k in range(5)]
    with pytest.raises(FalseCliError) as err:
        run_jobs(planned, Parallel("2"), "test")
    text = str(err.value)
    assert text.startswith("5 of 5 runs failed (r0: reason 0; r1: reason 1; r2: reason 2; "
                           "and 2 more); ") and "\n" not in text


def test_a_killed_run_takes_no_other_with_it(tmp_path: Path) -> None:
    planned = [Job("killed", _killed), Job("good", _stamp, (str(tmp_path), "good", 0.5))]
    with pytest.raises(FalseCliError, match="killed: killed by signal 9"):
        run_jobs(planned, Parallel("2"), "test")
    assert (tmp_path / "good.json").is_file()


def test_one_job_or_one_process_runs_here_in_order(tmp_path: Path) -> None:
    with pytest.raises(FalseCliError, match="^first$"):  # raised as it comes, not collected
        run_jobs([Job("a", _fail, ("first",)), Job("b", _stamp, (str(tmp_path), "b", 0))],
                 Parallel("1"), "test")
    assert not (tmp_path / "b.json").exists()


def test_retrain_in_two_processes_writes_what_one_at_a_time_writes(
        cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run trains with the same data, seed and one thread either way (the tests' one
    thread here; two workers share two cores, whatever the machine has): the models and
    tracking records must be the same bytes."""
    monkeypatch.setattr(jobs, "cores", lambda: 2)
    base = tmp_path / "base"
    assert cli("train", "-w", base, *sets_args(TINY), "--quiet").exit_code == 0
    args = [*sets_args(TINY), "--aug", "none", "--aug", "flip", "--seeds", "1", "--quiet"]
    works = {}
    for n in (1, 2):
        works[n] = tmp_path / f"jobs{n}"
        shutil.copytree(base, works[n])
        result = cli("retrain", "-w", works[n], *args, "--jobs", n, "--json")
        assert result.exit_code == 0, result.output
        assert {r["run"] for r in json.loads(result.stdout)["runs"]} == {
            "retrain/none/seed1", "retrain/flip/seed1"}
    for run in ("retrain/none/seed1", "retrain/flip/seed1"):
        for rel in ("model.pt", "tracking/correct.npy", "tracking/pred_last.npy"):
            one, two = (works[n] / run / rel for n in (1, 2))
            if rel.endswith(".pt"):
                a, b = (load_model(p)[0].state_dict() for p in (one, two))
                assert all(torch.equal(a[k], b[k]) for k in a), (run, rel)
            else:
                assert one.read_bytes() == two.read_bytes(), (run, rel)


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0"], "--jobs '0': expected a count of 1 or more, or auto"),
    (["--executor", "rya"], "--executor 'rya': expected one of local, ray; did you mean 'ray'?"),
    (["--address", "10.0.0.1:6379"], "--address names a Ray cluster: add --executor ray"),
])
def test_parallel_options_are_checked_in_one_line(cli, tmp_path: Path, args: list[str],
                                                  message: str) -> None:
    result = cli("retrain", "-w", tmp_path, *args)
    assert result.exit_code == 1
    assert result.output.strip() == f"falsecli retrain: {message}"


def _pid_then_sleep(folder: str, name: str) -> None:
    (Path(folder) / f"{name}.pid").write_text(str(os.getpid()))
    time.sleep(60)


def _parent(folder: str) -> None:
    run_jobs([Job(name, _pid_then_sleep, (folder, name)) for name in ("a", "b")],
             Parallel("2"), "test")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc (Linux)")
def test_runs_end_with_a_killed_parent(tmp_path: Path) -> None:
    """No orphan goes on writing into the workdir after its command was killed."""
    import multiprocessing

    parent = multiprocessing.get_context("spawn").Process(target=_parent, args=(str(tmp_path),))
    parent.start()
    pids = [tmp_path / f"{name}.pid" for name in ("a", "b")]
    deadline = time.time() + 60
    while not all(p.is_file() and p.read_text() for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    runs = [int(p.read_text()) for p in pids]
    assert all(_alive(pid) for pid in runs)
    os.kill(parent.pid, signal.SIGKILL)
    parent.join()
    deadline = time.time() + 10
    while any(_alive(pid) for pid in runs) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in runs)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc (Linux)")
def test_ctrl_c_stops_the_runs_without_a_traceback_from_each(tmp_path: Path) -> None:
    """Ctrl-C goes to the whole process group; the parent stops its workers, which print
    nothing of their own."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from test_jobs import _parent; _parent(sys.argv[1])",
         str(tmp_path)], stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    pids = [tmp_path / f"{name}.pid" for name in ("a", "b")]
    deadline = time.time() + 60
    while not all(p.is_file() and p.read_text() for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    runs = [int(p.read_text()) for p in pids]
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert "SpawnProcess" not in err and err.count("Traceback") == 1, err  # the parent's alone
    assert not any(_alive(pid) for pid in runs)
