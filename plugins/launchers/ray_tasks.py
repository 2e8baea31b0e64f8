"""The ``ray`` launcher: each run of a sweep a Ray task, placed by Ray on its cluster.

``pip install 'sslrun[ray]'``; ``sslrun sweep ... --launcher ray`` starts a Ray instance
on this machine, ``--launcher-set address=auto`` (or ``HOST:PORT``) joins a running
cluster. A task reserves the run's CPUs (the recipe's ``train.threads``, else
``cpus_per_run``) and a GPU (``gpus_per_run`` of one) when the run will train on one,
and runs the same
``python -m ssl_core train ...`` process a local sweep runs, so run folders, their
locks, checkpoints and tables are the same; the folders must lie on a path every node
sees (a shared file system). Ctrl-C cancels the queued tasks and asks the running ones
to checkpoint; a run whose worker died is reported failed and resumed by the next sweep.
Ray is imported only when this launcher is used.
"""

from __future__ import annotations

from typing import Any, ClassVar

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


class RaySettings(LauncherSettings):
    address: str | None = Field(
        None,
        min_length=1,
        description="cluster to join ('auto', 'HOST:PORT'); unset starts Ray on this machine",
    )
    cpus_per_run: int = Field(
        1, ge=1, le=1024, description="CPUs of a run whose recipe leaves train.threads at 0"
    )
    gpus_per_run: float | None = Field(
        None,
        gt=0,
        le=64,
        description="GPUs a run that trains on a GPU reserves (0.25: four runs share one);"
        " unset: 1",
    )


def train_in_task(job: RunJob, threads: int) -> int:
    """In a Ray worker: the run's process with its CPU threads capped to the task's CPUs.

    A cancelled task gets KeyboardInterrupt here; the child is then stopped and waited
    for, so the run has checkpointed by the time the task ends. If the worker dies, the
    child gets one SIGTERM (its parent died) and checkpoints: in a session of its own,
    it is out of the worker's process group, which Ray signals too.
    """
    return ChildRun(job, thread_env(threads), own_session=True).run()


class RayLauncher(Launcher):
    """Submits every pending run as a Ray task at once (``--jobs`` caps that)."""

    name: ClassVar[str] = "ray"
    Settings: ClassVar[type[LauncherSettings]] = RaySettings
    requires: ClassVar[dict[str, str]] = {"ray": "pip install 'sslrun[ray]'"}

    def __init__(self, settings: LauncherSettings, jobs: int | None) -> None:
        super().__init__(settings, jobs)
        self.ray: Any = None
        self.task: Any = None
        self.started_ray = False
        self.running: set[Any] = set()

    @property
    def s(self) -> RaySettings:
        return self.settings  # type: ignore[return-value]

    def concurrency(self, pending: int) -> int:
        return self.jobs or pending

    def prepare(self, jobs: list[RunJob]) -> None:
        try:
            import ray
        except ImportError:
            raise RecipeError(
                "--launcher ray: Ray is not installed (pip install 'sslrun[ray]')"
            ) from None
        self.ray = ray
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.s.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="ERROR",
                )
            except (ConnectionError, RuntimeError) as exc:
                where = self.s.address or "a local instance"
                message = " ".join(str(exc).split())[:200]
                raise RecipeError(f"--launcher ray: cannot reach {where} ({message})") from None
            self.started_ray = True
        # No retries: a retried task would start beside a run still checkpointing.
        self.task = ray.remote(max_retries=0)(train_in_task)

    def gpus(self, job: RunJob) -> float:
        """What a run reserves: a GPU (or a share) when it will train on one.

        ``train.device = "auto"`` trains on a GPU wherever the cluster has any, so such
        a run asks for one then; on a cluster without GPUs it asks for none.
        """
        cluster_gpus = float(self.ray.cluster_resources().get("GPU", 0))
        wanted = job.wants_gpu(cluster_gpus > 0)
        return (self.s.gpus_per_run or 1.0) if wanted else 0.0

    def launch(self, job: RunJob) -> int:
        cpus = job.threads or self.s.cpus_per_run
        with self.lock:
            if self.stopping:
                return INTERRUPTED_EXIT
            gpus = self.gpus(job)
            options = {"num_cpus": cpus, "num_gpus": gpus, "name": f"sslrun {job.name}"}
            ref = self.task.options(**options).remote(job, cpus)
            self.running.add(ref)
        try:
            return int(self.ray.get(ref))
        except self.ray.exceptions.TaskCancelledError:
            return INTERRUPTED_EXIT
        except self.ray.exceptions.RayError as exc:
            if self.stopping:
                return INTERRUPTED_EXIT
            reason = " ".join(str(exc).split())[:300]
            write_log_error(
                job.log,
                f"the Ray task of this run ended without a result ({type(exc).__name__}:"
                f" {reason}); run the sweep again to resume it",
            )
            return 1
        finally:
            with self.lock:
                self.running.discard(ref)

    def stop(self) -> None:
        """Cancel every task: a queued one never starts, a running one checkpoints first."""
        with self.lock:
            self.stopping = True
            for ref in self.running:
                self.ray.cancel(ref)

    def close(self) -> None:
        if self.started_ray:
            self.ray.shutdown()
            self.started_ray = False


@hookimpl
def sslrun_register_launchers(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(RayLauncher)
