"""The ``slurm`` launcher: each run of a sweep a SLURM job, submitted through submitit.

``pip install 'sslrun[slurm]'``; ``sslrun sweep ... --launcher slurm --launcher-set
partition=gpu``. A job reserves the run's CPUs (the recipe's ``train.threads``, else
``cpus_per_run``) and a GPU when the recipe asks for CUDA, and runs the same
``python -m ssl_core train ...`` process a local sweep runs; run folders must lie on a
file system the nodes share. When SLURM preempts a job or its time runs out, submitit
signals it (SIGUSR2): the run checkpoints and the job is requeued, resuming from that
checkpoint (a run may outlast ``time_minutes`` by up to ``max_requeues`` timeouts).
Ctrl-C cancels every job (``scancel``: running runs get SIGTERM and checkpoint).
``cluster = "local"`` runs the jobs through submitit's local executor on this machine,
which needs no SLURM. submitit is imported only when this launcher is used; its job
files go to ``SWEEP/.submitit``.
"""

from __future__ import annotations

import signal
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from ssl_core.api.launcher import (
    INTERRUPTED_EXIT,
    ChildRun,
    Launcher,
    LauncherSettings,
    RunJob,
    thread_env,
    write_log_error,
)
from ssl_core.api.plugin import hookimpl
from ssl_core.errors import RecipeError


class SlurmSettings(LauncherSettings):
    cluster: Literal["slurm", "local"] = Field(
        "slurm", description="'local': submitit's local executor, jobs on this machine"
    )
    partition: str | None = Field(None, min_length=1, description="SLURM partition")
    time_minutes: int = Field(240, ge=1, description="time limit of one job (a requeue renews it)")
    max_requeues: int = Field(3, ge=0, le=100, description="requeues after a time-out")
    cpus_per_run: int = Field(
        1, ge=1, le=1024, description="CPUs of a run whose recipe leaves train.threads at 0"
    )
    mem_gb: float | None = Field(None, gt=0, description="memory of one job")
    gpus_per_run: int = Field(1, ge=1, le=64, description="GPUs of a job whose run trains on a GPU")
    array: bool = Field(False, description="submit the pending runs as job arrays")
    setup: list[str] = Field(
        default_factory=list, description="shell lines run before each job (module load ...)"
    )
    additional: dict[str, str | int] = Field(
        default_factory=dict, description="more sbatch options (account, qos, constraint ...)"
    )


class TrainInJob:
    """The callable a job runs: the run's process, started or resumed from its checkpoint.

    submitit calls :meth:`checkpoint` when the job is preempted or times out; the run
    then checkpoints and the same callable is requeued, so the next try resumes.
    """

    def __init__(self, job: RunJob, threads: int) -> None:
        self.job = job
        self.threads = threads
        self.child: ChildRun | None = None

    def __call__(self) -> int:
        self.child = ChildRun(self.job, thread_env(self.threads), ignore=(signal.SIGUSR2,))
        return self.child.run()

    def checkpoint(self) -> Any:
        from submitit.helpers import DelayedSubmission

        if self.child is not None:
            self.child.stop()
        return DelayedSubmission(TrainInJob(self.job, self.threads))

    def __getstate__(self) -> dict[str, Any]:
        return {"job": self.job, "threads": self.threads, "child": None}


class SlurmLauncher(Launcher):
    """Submits each pending run as a job (or every run as job arrays) and waits for it."""

    name: ClassVar[str] = "slurm"
    Settings: ClassVar[type[LauncherSettings]] = SlurmSettings
    requires: ClassVar[dict[str, str]] = {"submitit": "pip install 'sslrun[slurm]'"}

    def __init__(self, settings: LauncherSettings, jobs: int | None) -> None:
        super().__init__(settings, jobs)
        self.executor: Any = None
        self.submitted: dict[str, Any] = {}

    @property
    def s(self) -> SlurmSettings:
        return self.settings  # type: ignore[return-value]

    def concurrency(self, pending: int) -> int:
        return pending  # SLURM queues them; --jobs caps the jobs running at once

    def prepare(self, jobs: list[RunJob]) -> None:
        if not jobs:
            return
        try:
            import submitit
        except ImportError:
            raise RecipeError(
                "--launcher slurm: submitit is not installed (pip install 'sslrun[slurm]')"
            ) from None
        folder = Path(jobs[0].folder).parent.parent / ".submitit" / "%j"
        timeouts = self.s.max_requeues
        try:
            self.executor = submitit.AutoExecutor(
                folder=folder,
                cluster=self.s.cluster,
                slurm_max_num_timeout=timeouts,
                local_max_num_timeout=timeouts,
            )
        except RuntimeError as exc:
            raise RecipeError(f"--launcher slurm: {exc} (is this a SLURM machine?)") from None
        parameters: dict[str, Any] = {
            "timeout_min": self.s.time_minutes,
            "mem_gb": self.s.mem_gb,
            "slurm_partition": self.s.partition,
            "slurm_additional_parameters": dict(self.s.additional) or None,
            "slurm_setup": list(self.s.setup) or None,
            "slurm_array_parallelism": self.jobs,
            "local_setup": list(self.s.setup) or None,
        }
        self.executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
        if self.s.array:
            by_resources: dict[tuple[int, int], list[RunJob]] = defaultdict(list)
            for job in jobs:
                by_resources[self.resources(job)].append(job)
            for (cpus, gpus), group in by_resources.items():
                self.executor.update_parameters(cpus_per_task=cpus, gpus_per_node=gpus)
                handles = self.executor.submit_array([TrainInJob(job, cpus) for job in group])
                self.submitted.update(zip((job.name for job in group), handles, strict=True))

    def resources(self, job: RunJob) -> tuple[int, int]:
        """CPUs and GPUs of the run's job; ``"auto"`` asks for a GPU on a GPU partition."""
        wanted = job.wants_gpu(partition_has_gpus(self.s.partition))
        return job.threads or self.s.cpus_per_run, self.s.gpus_per_run if wanted else 0

    def launch(self, job: RunJob) -> int:
        with self.lock:
            if self.stopping:
                return INTERRUPTED_EXIT
            handle = self.submitted.get(job.name)
            if handle is None:
                cpus, gpus = self.resources(job)
                self.executor.update_parameters(cpus_per_task=cpus, gpus_per_node=gpus)
                handle = self.submitted[job.name] = self.executor.submit(TrainInJob(job, cpus))
        try:
            return int(handle.result())
        except Exception as exc:  # submitit's errors for a job that failed or was killed
            if self.stopping:
                return INTERRUPTED_EXIT
            reason = " ".join(str(exc).split())[:300]
            write_log_error(
                job.log,
                f"SLURM job {handle.job_id} of this run ended without a result"
                f" ({type(exc).__name__}: {reason}); run the sweep again to resume it",
            )
            return 1

    def stop(self) -> None:
        """Cancel every job: a queued one never starts, a running one checkpoints first."""
        with self.lock:
            self.stopping = True
            for handle in self.submitted.values():
                if not handle.done():
                    handle.cancel(check=False)


def partition_has_gpus(partition: str | None) -> bool:
    """Whether the partition's nodes offer GPUs (``sinfo``'s generic resources)."""
    command = ["sinfo", "--noheader", "--format=%G"]
    command += ["--partition", partition] if partition else []
    try:
        listed = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "gpu" in listed


@hookimpl
def sslrun_register_launchers(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(SlurmLauncher)
