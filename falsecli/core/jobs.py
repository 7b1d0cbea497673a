"""Independent runs in parallel processes: ``--jobs N``.

A study is a grid of independent runs (methods x seeds, strategies x seeds). On a CPU the
network's threads scale poorly at these sizes (1 -> 2 threads: 1.5x on this project's
2-core machine), so N processes with the cores split between them finish more runs per hour
than one process with them all; with several GPUs each process gets its own. Each job is a
stage function in a fresh (``spawn``) process; it writes its own stage folder under its own
lock, exactly as it would alone, so a killed batch resumes like a killed run. A job that fails
is told in one line; the others go on; the error names them all at the end.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from multiprocessing import connection
from multiprocessing.connection import Connection
from dataclasses import dataclass, field
from typing import Any, Callable

from falsecli.core import console
from falsecli.core.errors import FalseCliError

#: ``--jobs auto`` on a CPU: at most this many processes (two 1-thread runs finish 1.3x the
#: runs per hour of one 2-thread run here, docs/speed.md; more need memory: ~1.4 GB per run)
AUTO_CPU_JOBS = 4


@dataclass(frozen=True)
class Job:
    """One independent run: ``fn(*args, **kwargs)`` after the jobs named in ``after``.
    ``fn`` must be a module-level function: it travels to another process by name."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()


def cores() -> int:
    """The cores this process may use (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_jobs(spec: str | int, device: str) -> int:
    """``--jobs``: a count, or ``auto``: one per visible GPU when ``device`` (train.device)
    may use CUDA, else up to :data:`AUTO_CPU_JOBS`, one core each at least."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 1  # a torchrun process is one rank of one run
    if str(spec) != "auto":
        try:
            n = int(spec)
        except ValueError:
            n = 0
        if n < 1:
            raise FalseCliError(f"--jobs '{spec}': expected a count of 1 or more, or auto")
        return n
    return gpus(device) or max(1, min(cores(), AUTO_CPU_JOBS))


def gpus(device: str) -> int:
    """The GPUs the jobs are placed on: none when ``device`` is the CPU."""
    if device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count() if device in ("auto", "cuda") else 1


def _child(job: Job, threads: int, gpu: str | None, quiet: bool, pipe: Connection) -> None:
    """A job's own process: its share of the cores and its GPU, set before torch starts its
    thread pools; plain log lines instead of bars; its result or error sent back."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    import torch

    torch.set_num_threads(threads)
    console.set_quiet(quiet)
    console.set_plain(True)
    try:
        pipe.send(("done", job.fn(*job.args, **job.kwargs)))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back in one line
        text = str(exc) if isinstance(exc, FalseCliError) else f"{type(exc).__name__}: {exc}"
        pipe.send(("failed", (text.splitlines() or [type(exc).__name__])[0]))
        if not isinstance(exc, FalseCliError):
            raise  # the worker's traceback on stderr: a bug to report


def run_jobs(jobs: list[Job], n: int, what: str, device: str = "cpu") -> dict[str, Any]:
    """Each job's result by name. ``n`` = 1 runs them in order here, errors raised as they
    come; more run ``n`` at a time, each in a process of its own (a killed or crashed run
    takes no other with it), a job as soon as those it comes ``after`` are done, spread over
    the GPUs when ``device`` (train.device) uses CUDA."""
    if n <= 1 or len(jobs) <= 1:
        return {job.name: job.fn(*job.args, **job.kwargs) for job in jobs}
    names = {job.name for job in jobs}
    waiting = [Job(j.name, j.fn, j.args, j.kwargs, tuple(a for a in j.after if a in names))
               for j in jobs]
    n = min(n, len(jobs))
    threads, placed = max(1, cores() // n), gpus(device)
    console.log(f"{what}: {len(jobs)} runs, {n} at a time, {threads} thread(s) each")
    context = multiprocessing.get_context("spawn")
    results: dict[str, Any] = {}
    failed: dict[str, str] = {}
    running: dict[Connection, tuple[Job, Any, Connection, int, float]] = {}
    try:
        while waiting or running:
            for job in [j for j in waiting if any(a in failed for a in j.after)]:
                waiting.remove(job)
                failed[job.name] = f"not run: {next(a for a in job.after if a in failed)} failed"
            for job in [j for j in waiting if all(a in results for a in j.after)][:n - len(running)]:
                waiting.remove(job)
                slot = min(set(range(n)) - {r[3] for r in running.values()})
                gpu = str(slot % placed) if placed > 1 else None
                mine, theirs = context.Pipe(duplex=False)
                proc = context.Process(target=_child, args=(job, threads, gpu,
                                                             console.is_quiet(), theirs))
                proc.start()
                theirs.close()
                running[mine] = (job, proc, mine, slot, time.time())
                console.log(f"{what}: {job.name} started")
            if not running:
                break
            # a result arrives, or the end of the pipe when a process died without one
            for pipe in connection.wait(list(running)):
                _collect(what, running.pop(pipe), results, failed)
    finally:
        for _, proc, *_ in running.values():  # interrupted: the others stop too
            proc.terminate()
            proc.join()
    if failed:
        listed = "; ".join(f"{name}: {why}" for name, why in failed.items())
        raise FalseCliError(f"{len(failed)} of {len(jobs)} runs failed ({listed}); the others "
                            "are complete: run the same command again to redo the failed ones")
    return results


def _collect(what: str, entry: tuple[Job, Any, Connection, int, float],
             results: dict[str, Any], failed: dict[str, str]) -> None:
    """A finished process's result, or its error (or the signal that ended it) in one line."""
    job, proc, pipe, _, t0 = entry
    try:
        message = pipe.recv()
    except EOFError:
        message = None
    proc.join()
    if message is not None and message[0] == "done":
        results[job.name] = message[1]
        console.log(f"{what}: {job.name} done in {time.time() - t0:.0f} s")
        return
    if message is not None:
        failed[job.name] = message[1]
    else:
        code = proc.exitcode
        failed[job.name] = (f"killed by signal {-code}" if code is not None and code < 0
                            else f"exited with code {code} before its result")
    console.log(f"{what}: {job.name} failed: {failed[job.name]}")
