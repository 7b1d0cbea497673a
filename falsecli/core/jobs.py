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

#: failed runs the batch's error names (the log told each failure in a line as it came)
SHOWN = 3


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
    """Where jobs run: ``slots`` at a time; ``start`` gives a handle, ``wait`` the handles
    that finished, ``outcome`` ("done", result) or ("failed", one line)."""

    slots: int

    def start(self, job: Job) -> Any: ...
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
            for job in ready[:runner.slots - len(running)]:
                waiting.remove(job)
                running[runner.start(job)] = (job, time.time())
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
                    failed[job.name] = value.removeprefix(f"{job.name}: ")  # named once
                    console.log(f"{what}: {job.name} failed: {failed[job.name]}")
    finally:
        runner.stop(list(running))  # interrupted: the others stop too
    if failed:
        order = [j.name for j in jobs if j.name in failed]  # the plan's order, not the clock's
        listed = "; ".join(f"{name}: {failed[name]}" for name in order[:SHOWN])
        more = f"; and {len(failed) - SHOWN} more" if len(failed) > SHOWN else ""
        raise FalseCliError(f"{len(failed)} of {len(jobs)} runs failed ({listed}{more}); the "
                            "others are complete: run the same command again to redo the failed "
                            "ones")
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


def _serve(pipe: Connection, gpu: str | None, quiet: bool, parent: int) -> None:
    """A local worker: runs the jobs it is sent, one at a time, each result or error sent
    back, until the pipe closes. Kept between jobs, so that a batch pays torch's start once
    per worker (3 s here) rather than once per run; a job that fails other than by a
    :class:`FalseCliError` (a bug, an interrupt) ends its worker, whose state may be broken."""
    _end_with_parent()
    if os.getppid() != parent:  # the parent died before the line above
        return
    # Ctrl-C reaches the whole process group: the parent's to handle, which stops the workers
    # (one line), rather than each worker's traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if gpu is not None:  # before torch starts
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    while True:
        try:
            job, threads = pipe.recv()
        except EOFError:
            return
        try:
            pipe.send(("done", in_worker(job, threads, quiet)))
        except FalseCliError as exc:  # refused by falsecli's own checks: the worker is sound
            pipe.send(("failed", one_line(exc)))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back in one line
            pipe.send(("crashed", one_line(exc)))
            raise  # the worker's traceback on stderr: a bug to report; the worker ends


class LocalRunner:
    """``slots`` worker processes here (``spawn``: no state of the parent's torch is shared),
    each kept for the next job, slot k on GPU k mod the count. Each run has ``cores //
    slots`` threads, also when it happens to run alone: a CPU's results depend on the thread
    count (the generator's samples visibly), so a run's numbers must not depend on what ran
    beside it."""

    def __init__(self, slots: int, device: str) -> None:
        self.slots, self.gpus = slots, gpus(device)
        self.threads = max(1, cores() // slots)
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, tuple[Any, Connection]] = {}  # slot -> (process, pipe)
        self.busy: dict[Connection, int] = {}  # a running job's pipe -> its slot
        console.log(f"up to {slots} runs at a time here, {self.threads} thread(s) each")

    def _worker(self, slot: int) -> Connection:
        """Slot ``slot``'s worker, started when it has none."""
        if slot not in self.workers:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            ids = visible.split(",") if visible else [str(i) for i in range(self.gpus)]
            gpu = ids[slot % self.gpus] if self.gpus > 1 else None
            mine, theirs = self.context.Pipe()
            proc = self.context.Process(target=_serve, args=(
                theirs, gpu, console.is_quiet(), os.getpid()))
            proc.start()
            theirs.close()
            self.workers[slot] = (proc, mine)
        return self.workers[slot][1]

    def _retire(self, slot: int) -> None:
        proc, pipe = self.workers.pop(slot)
        pipe.close()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()

    def start(self, job: Job) -> Connection:
        slot = min(set(range(self.slots)) - set(self.busy.values()))
        pipe = self._worker(slot)
        pipe.send((job, self.threads))
        self.busy[pipe] = slot
        return pipe

    def wait(self, handles: list[Connection]) -> list[Connection]:
        # a result arrives, or the end of the pipe when a worker died without one
        return list(connection.wait(handles))

    def outcome(self, handle: Connection) -> tuple[str, Any]:
        slot = self.busy.pop(handle)
        try:
            message = handle.recv()
        except EOFError:
            message = None
        if message is not None and message[0] != "crashed":
            return message
        proc = self.workers[slot][0]
        self._retire(slot)
        if message is not None:
            return "failed", message[1]
        code = proc.exitcode
        return "failed", (f"killed by signal {-code}" if code is not None and code < 0
                          else f"exited with code {code} before its result")

    def stop(self, handles: list[Connection]) -> None:
        for handle in handles:
            slot = self.busy.pop(handle)
            self.workers[slot][0].terminate()
            self._retire(slot)

    def close(self) -> None:
        for slot in list(self.workers):
            self._retire(slot)  # an idle worker ends when its pipe closes
