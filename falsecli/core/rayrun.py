"""``--executor ray``: the same jobs as :mod:`falsecli.core.jobs`, one Ray task per run, on a
laptop (a local Ray instance) or a cluster (``--address``), writing into the shared workdir
exactly what a local run writes (the task calls the same stage function).

A task whose worker or node is lost is tried again (:data:`RETRIES` times; the run continues
from its last checkpoint, as any interrupted run does); an error of the run itself (bad input)
is not: it would fail again. Each task asks for its share of the cluster's CPUs and, when the
runs may use CUDA and the cluster has GPUs, one GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from falsecli.core import console
from falsecli.core.errors import FalseCliError
from falsecli.core.jobs import Job, count, in_worker, one_line

#: tries after the first when a task's worker or node is lost
RETRIES = 2


def _task(job: Job, threads: int, quiet: bool) -> Any:
    return in_worker(job, threads, quiet)


class RayRunner:
    """Jobs as Ray tasks; ``--jobs auto``: one per GPU of the cluster when the runs may use
    CUDA, else one per two of its CPUs."""

    def __init__(self, jobs: str, address: str | None, device: str) -> None:
        try:
            import ray
        except ImportError:
            raise FalseCliError("--executor ray needs Ray: pip install 'falsecli[ray]'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, include_dashboard=False,
                     log_to_driver=not console.is_quiet(), configure_logging=False)
        resources = ray.cluster_resources()
        cpus = max(1, int(resources.get("CPU", 1)))
        n_gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
        self.slots = count(jobs, n_gpus or max(1, cpus // 2))
        self.threads = max(1, cpus // (n_gpus or self.slots))
        self.remote = ray.remote(_task).options(
            num_cpus=self.threads, num_gpus=1 if n_gpus else 0, max_retries=RETRIES,
            retry_exceptions=False)
        console.log(f"ray: {self.slots} runs at a time on {cpus} CPUs and {n_gpus} GPUs, "
                    f"{self.threads} thread(s) each")

    def start(self, job: Job) -> Any:
        """A task with the CPUs (and GPU) reserved when the runner started."""
        # paths relative to this shell mean nothing on another node
        args = tuple(a.resolve() if isinstance(a, Path) else a for a in job.args)
        return self.remote.remote(Job(job.name, job.fn, args, job.kwargs, job.after),
                                  self.threads, console.is_quiet())

    def wait(self, handles: list[Any]) -> list[Any]:
        ready, _ = self.ray.wait(handles, num_returns=1)
        return ready

    def outcome(self, handle: Any) -> tuple[str, Any]:
        errors = self.ray.exceptions
        try:
            return "done", self.ray.get(handle)
        except errors.RayTaskError as exc:
            return "failed", one_line(exc.cause if exc.cause is not None else exc)
        except errors.RayError as exc:  # the worker or node was lost on every try
            return "failed", f"lost after {1 + RETRIES} tries ({type(exc).__name__})"

    def stop(self, handles: list[Any]) -> None:
        for handle in handles:
            self.ray.cancel(handle, force=True)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
