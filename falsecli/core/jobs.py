"""Running independent jobs: the scheduler (each job as soon as those it comes after are done)
and the local runner (each job in a process of its own, the cores split between the jobs
started together, one GPU each). :mod:`falsecli.core.parallel` chooses the runner;
:mod:`falsecli.core.rayrun` is the other one.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing import connection
from multiprocessing.connection import Connection
from typing import Any, Callable, Protocol

from falsecli.core import console
from falsecli.core.errors import FalseCliError

@dataclass(frozen=True)
class Job:
    """One independent run: ``fn(*args, **kwargs)`` after the jobs named in ``after``.
    ``fn`` must be a module-level function: it travels to another process by name."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()


class Runner(Protocol):
    """Where jobs run: ``slots`` at a time; ``start`` gives a handle (``share``: how many
    runs divide the cores now), ``wait`` the handles that finished, ``outcome`` ("done",
    result) or ("failed", one line)."""

    slots: int

    def start(self, job: Job, share: int) -> Any: ...
    def wait(self, handles: list[Any]) -> list[Any]: ...
    def outcome(self, handle: Any) -> tuple[str, Any]: ...
    def stop(self, handles: list[Any]) -> None: ...
    def close(self) -> None: ...


def cores() -> int:
    """The cores this process may use (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def count(spec: str | int, auto: int) -> int:
    """``--jobs``: a count of 1 or more, or ``auto``."""
    if str(spec) == "auto":
        return auto
    try:
        n = int(spec)
    except ValueError:
        n = 0
    if n < 1:
        raise FalseCliError(f"--jobs '{spec}': expected a count of 1 or more, or auto")
    return n


def gpus(device: str) -> int:
    """The GPUs here the jobs are spread over: none when ``device`` is the CPU."""
    if device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count() if device in ("auto", "cuda") else 1


def schedule(jobs: list[Job], runner: Runner, what: str) -> dict[str, Any]:
    """Each job's result by name, ``runner.slots`` at a time; a failed job is told in one
    line, the others go on, and one error names them all at the end."""
    names = {job.name for job in jobs}
    waiting = [Job(j.name, j.fn, j.args, j.kwargs, tuple(a for a in j.after if a in names))
               for j in jobs]
    results: dict[str, Any] = {}
    failed: dict[str, str] = {}
    running: dict[Any, tuple[Job, float]] = {}
    try:
        while waiting or running:
            for job in [j for j in waiting if any(a in failed for a in j.after)]:
                waiting.remove(job)
                failed[job.name] = f"not run: {next(a for a in job.after if a in failed)} failed"
            ready = [j for j in waiting if all(a in results for a in j.after)]
            # a run alone (train before the grid) gets every core; a full grid, its share
            share = min(runner.slots, len(running) + len(ready))
            for job in ready[:runner.slots - len(running)]:
                waiting.remove(job)
                running[runner.start(job, share)] = (job, time.time())
                console.log(f"{what}: {job.name} started")
            if not running:
                break
            for handle in runner.wait(list(running)):
                job, t0 = running.pop(handle)
                status, value = runner.outcome(handle)
                if status == "done":
                    results[job.name] = value
                    console.log(f"{what}: {job.name} done in {time.time() - t0:.0f} s")
                else:
                    failed[job.name] = value
                    console.log(f"{what}: {job.name} failed: {value}")
    finally:
        runner.stop(list(running))  # interrupted: the others stop too
    if failed:
        listed = "; ".join(f"{name}: {why}" for name, why in failed.items())
        raise FalseCliError(f"{len(failed)} of {len(jobs)} runs failed ({listed}); the others "
                            "are complete: run the same command again to redo the failed ones")
    return results


def one_line(exc: BaseException) -> str:
    """An error of a run as the report of the batch names it."""
    text = str(exc) if isinstance(exc, FalseCliError) else f"{type(exc).__name__}: {exc}"
    return (text.splitlines() or [type(exc).__name__])[0]


def in_worker(job: Job, threads: int, quiet: bool) -> Any:
    """Run ``job`` in a worker: its share of the cores, plain log lines instead of bars
    (workers share stderr)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    console.set_quiet(quiet)
    console.set_plain(True)
    return job.fn(*job.args, **job.kwargs)


def _end_with_parent() -> None:
    """Linux: this process gets SIGKILL when the one that started it dies (killed, Ctrl-C'd
    or crashed), so that no orphan goes on training into the workdir; elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(job: Job, threads: int, gpu: str | None, quiet: bool, pipe: Connection,
           parent: int) -> None:
    """A local job's process (its GPU set before torch starts): result or error sent back."""
    _end_with_parent()
    if os.getppid() != parent:  # the parent died before the line above
        return
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        pipe.send(("done", in_worker(job, threads, quiet)))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back in one line
        pipe.send(("failed", one_line(exc)))
        if not isinstance(exc, FalseCliError):
            raise  # the worker's traceback on stderr: a bug to report


class LocalRunner:
    """``slots`` processes here (``spawn``: no state of the parent's torch is shared), the
    cores split between the runs started together, slot k on GPU k mod the count."""

    def __init__(self, slots: int, device: str) -> None:
        self.slots, self.gpus = slots, gpus(device)
        self.context = multiprocessing.get_context("spawn")
        self.procs: dict[Connection, tuple[Any, int]] = {}
        console.log(f"up to {slots} runs at a time here, {cores()} cores between them")

    def start(self, job: Job, share: int) -> Connection:
        slot = min(set(range(self.slots)) - {s for _, s in self.procs.values()})
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(self.gpus)]
        gpu = ids[slot % self.gpus] if self.gpus > 1 else None
        mine, theirs = self.context.Pipe(duplex=False)
        threads = max(1, cores() // max(1, share))
        proc = self.context.Process(target=_child,
                                    args=(job, threads, gpu, console.is_quiet(), theirs,
                                          os.getpid()))
        proc.start()
        theirs.close()
        self.procs[mine] = (proc, slot)
        return mine

    def wait(self, handles: list[Connection]) -> list[Connection]:
        # a result arrives, or the end of the pipe when a process died without one
        return list(connection.wait(handles))

    def outcome(self, handle: Connection) -> tuple[str, Any]:
        proc, _ = self.procs.pop(handle)
        try:
            message = handle.recv()
        except EOFError:
            message = None
        proc.join()
        if message is not None:
            return message
        code = proc.exitcode
        return "failed", (f"killed by signal {-code}" if code is not None and code < 0
                          else f"exited with code {code} before its result")

    def stop(self, handles: list[Connection]) -> None:
        for handle in handles:
            proc, _ = self.procs.pop(handle)
            proc.terminate()
            proc.join()

    def close(self) -> None:
        pass
