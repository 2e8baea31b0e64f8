"""Sweep launchers: the registry, bad input, and real runs through Ray and submitit.

The Ray tests start a real two-node Ray cluster on 127.0.0.1 (``ray start --head`` and a
second ``ray start`` joining it); the SLURM tests run the ``slurm`` launcher through
submitit's local executor, since no SLURM is installed here. Every launcher must give
the table the local launcher gives for the same grid and seeds, resume a run whose
worker or job died, and checkpoint running runs when the sweep is stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from ssl_core import hookimpl
from ssl_core.api.launcher import Launcher, RunJob
from ssl_core.engine.catalogue import Catalogue
from ssl_core.errors import RecipeError
from ssl_core.experiments.grid import SweepSpec, spec_from_command_line
from ssl_core.experiments.sweep import SweepResult, run_sweep
from ssl_core.testing import assert_same_runs

from .conftest import RECIPES

MOONS = RECIPES / "supervised_moons.toml"
#: One thread per run: a run's numbers then do not depend on where it ran.
QUICK = {"train.epochs": 2, "train.iterations_per_epoch": 3, "train.threads": 1}
#: Long enough to be stopped in the middle (10-20 seconds).
LONG = {"train.epochs": 30, "train.iterations_per_epoch": 200, "train.threads": 1}
GRID = {"optim.lr": [0.01, 0.05]}


def sweep(tmp_path: Path, name: str, launcher: str = "local", **options) -> SweepResult:
    fixed = options.pop("fixed", QUICK)
    settings = options.pop("settings", {})
    spec = SweepSpec(
        recipes=[MOONS],
        name=name,
        fixed=dict(fixed),
        launcher=launcher,
        launcher_settings=settings,
        **options,
    )
    return run_sweep(spec, tmp_path)


def accuracies(result: SweepResult) -> list[tuple]:
    """The table without its timing column."""
    return [(r.label, r.finished, r.final_test_acc, r.best_test_acc, r.status) for r in result.rows]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def trained_epochs(folder: Path) -> int:
    metrics = folder / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def lock_holder(folder: Path) -> int:
    return int((folder / ".lock").read_text().split()[0])


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def is_free(folder: Path) -> bool:
    """No process trains into the folder: its lock can be taken."""
    with (folder / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return True


def status(folder: Path) -> str:
    return json.loads((folder / "summary.json").read_text())["status"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, list]:
    """The grid through the local launcher, and one long run trained without a stop."""
    root = tmp_path_factory.mktemp("local")
    table = accuracies(sweep(root, "grid", grid=GRID, seeds=[1, 2]))
    long_run = sweep(root, "long", fixed=LONG, seeds=[1])
    assert not long_run.failed
    return long_run.plan.runs[0].folder, table


# --- the registry and bad input ---------------------------------------------------------


def test_the_builtin_launchers_are_registered_without_importing_ray_or_submitit():
    code = (
        "import sys; from ssl_core.engine.catalogue import Catalogue;"
        " from ssl_core.cli import app;"
        " print(Catalogue.discover().launchers.names(), 'ray' in sys.modules,"
        " 'submitit' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['local',", "'ray',", "'slurm']", "False", "False"]


def test_an_unknown_launcher_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(RecipeError, match=r"--launcher rey: unknown launcher \(did you mean 'ray'"):
        sweep(tmp_path, "x", "rey")


def test_a_misspelled_launcher_key_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(RecipeError, match=r"launcher.adress: unknown key \(did you mean 'address'"):
        sweep(tmp_path, "x", "ray", settings={"adress": "auto"})
    with pytest.raises(RecipeError, match="launcher.cluster"):
        sweep(tmp_path, "x", "slurm", settings={"cluster": "kubernetes"})
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").rglob("recipe.toml"))


def test_launcher_options_parse_and_the_manifest_keeps_them(tmp_path):
    spec = spec_from_command_line(
        [MOONS],
        launcher="slurm",
        launcher_sets=["partition=gpu", "time_minutes=30", "additional={account = 'lab'}"],
    )
    assert spec.launcher_settings == {
        "partition": "gpu",
        "time_minutes": 30,
        "additional": {"account": "lab"},
    }
    with pytest.raises(RecipeError, match="--launcher-set partition: expected KEY=VALUE"):
        spec_from_command_line([MOONS], launcher="slurm", launcher_sets=["partition"])

    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text(f'recipe = "{MOONS}"\n[launcher]\nname = "ray"\naddress = "auto"\n')
    from_file = spec_from_command_line([sweep_file])
    assert (from_file.launcher, from_file.launcher_settings) == ("ray", {"address": "auto"})
    # Another launcher on the command line drops the file's launcher keys.
    assert spec_from_command_line([sweep_file], launcher="local").launcher_settings == {}


@pytest.mark.slow
def test_a_third_party_launcher_runs_the_sweep(tmp_path, reference):
    class InThisProcess(Launcher):
        """Runs each run in this process through the sslrun command."""

        name = "in_this_process"
        jobs_seen: ClassVar[list[str]] = []

        def launch(self, job: RunJob) -> int:
            from ssl_core.cli.app import main

            self.jobs_seen.append(job.name)
            try:
                main(list(job.arguments))
            except SystemExit as exc:
                return int(exc.code or 0)
            return 0

    module = types.ModuleType("sslrun_in_this_process")

    @hookimpl
    def sslrun_register_launchers(register) -> None:  # noqa: ANN001
        register(InThisProcess)

    module.sslrun_register_launchers = sslrun_register_launchers  # type: ignore[attr-defined]
    catalogue = Catalogue.discover(extra_modules=[module])
    spec = SweepSpec(
        recipes=[MOONS],
        name="grid",
        fixed=dict(QUICK),
        grid=GRID,
        seeds=[1, 2],
        launcher="in_this_process",
    )
    result = run_sweep(spec, tmp_path, catalogue)
    assert len(InThisProcess.jobs_seen) == 4
    assert accuracies(result) == reference[1]
    manifest = (result.plan.folder / "sweep.toml").read_text()
    assert '[launcher]\nname = "in_this_process"' in manifest


# --- Ray ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A head node and a second node on 127.0.0.1, one CPU each; its address.

    The cluster keeps its files in a folder of its own, so it neither meets nor stops
    another Ray instance on this machine (``ray stop`` would stop them all): at the end,
    the processes whose command line names that folder are ended, and only those.
    """
    pytest.importorskip("ray")
    ray = [sys.executable, "-m", "ray.scripts.scripts"]  # this interpreter: workers import sslrun
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    port = free_port()
    address = f"127.0.0.1:{port}"
    folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live in it
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    head = [*ray, "start", "--head", f"--port={port}", f"--temp-dir={folder}", *common]
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # this process joins the cluster too
    try:
        start_ray([*head, "--include-dashboard=false"], env)
        start_ray([*ray, "start", f"--address={address}", *common], env)
        yield address
    finally:
        end_processes_naming(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if previous is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous


def start_ray(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{' '.join(command[3:])}:\n{(done.stdout + done.stderr)[-3000:]}"


def end_processes_naming(text: str) -> None:
    """SIGTERM, then SIGKILL after ten seconds, to each process whose command line has ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_text(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue  # ended meanwhile
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in found):
            time.sleep(0.2)


@pytest.mark.slow
def test_a_ray_sweep_gives_the_local_table(tmp_path, ray_cluster, reference):
    result = sweep(
        tmp_path, "grid", "ray", settings={"address": ray_cluster}, grid=GRID, seeds=[1, 2]
    )
    assert not result.failed
    assert accuracies(result) == reference[1]
    again = sweep(
        tmp_path, "grid", "ray", settings={"address": ray_cluster}, grid=GRID, seeds=[1, 2]
    )
    assert again.outcomes == []  # finished runs are skipped


@pytest.mark.slow
def test_a_killed_ray_worker_s_run_resumes_on_the_next_sweep(tmp_path, ray_cluster, reference):
    settings = {"address": ray_cluster}
    folder = tmp_path / "long" / "base" / "seed-1"
    killer = threading.Thread(target=kill_the_worker_after_an_epoch, args=(folder,))
    killer.start()
    first = sweep(tmp_path, "long", "ray", settings=settings, fixed=LONG, seeds=[1])
    killer.join()
    # The run itself got SIGTERM when its worker died: "interrupted" once it has checkpointed.
    assert [row.status for row in first.rows] in (["1 failed"], ["1 interrupted"])
    assert "the Ray task of this run ended without a result" in first.failed[0].message
    wait_for(lambda: is_free(folder), "the run to checkpoint and end")
    assert (folder / "checkpoint.pt").is_file() and trained_epochs(folder) < 30

    second = sweep(tmp_path, "long", "ray", settings=settings, fixed=LONG, seeds=[1])
    assert not second.failed and status(folder) == "finished"
    assert_same_runs(reference[0], folder)  # resumed exactly where it stopped


def kill_the_worker_after_an_epoch(folder: Path) -> None:
    wait_for(lambda: trained_epochs(folder) >= 1, "the first epoch")
    os.kill(parent_of(lock_holder(folder)), signal.SIGKILL)  # the Ray worker running it


#: A Ray worker's part of a run, without Ray: the task function in a process of its own.
WORKER = """
import sys
from pathlib import Path
from plugins.launchers.ray_tasks import train_in_task
from ssl_core.api.launcher import RunJob
recipe, folder, log = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
start = ("train", recipe, "--out", str(folder), *sys.argv[4:])
resume = ("train", recipe, "--resume", str(folder), *sys.argv[4:])
sys.exit(train_in_task(RunJob("run", folder, log, start, resume, folder / "checkpoint.pt"), 1))
"""


@pytest.mark.slow
def test_a_run_whose_worker_dies_is_stopped_once_and_checkpoints(tmp_path):
    """Ray signals a dead worker's process group with SIGTERM. The run already got one
    SIGTERM because its parent died; a second would stop it at once, before its
    checkpoint is complete, so the run lives in a process group of its own."""
    folder, log = tmp_path / "run", tmp_path / "run.log"
    overrides = [part for key, value in LONG.items() for part in ("--set", f"{key}={value}")]
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(MOONS), str(folder), str(log), *overrides],
        start_new_session=True,  # its own group, as Ray's workers have
    )
    try:
        wait_for(lambda: trained_epochs(folder) >= 1, "the first epoch", 300)
        assert os.getpgid(lock_holder(folder)) != worker.pid  # out of the worker's group
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    time.sleep(0.1)  # the host notices the death a little later
    with contextlib.suppress(ProcessLookupError):  # the group may be empty: fine
        os.killpg(worker.pid, signal.SIGTERM)  # what the host does to the group it lost
    wait_for(lambda: is_free(folder), "the run to checkpoint and end", 300)
    assert "again" not in log.read_text()  # the run was asked to stop once
    assert (folder / "checkpoint.pt").is_file() and status(folder) == "interrupted"


def interrupt_the_main_thread() -> None:
    """Ctrl-C as the sweep's own thread gets it, whatever thread the test runs in.

    A signal sent to the process may land on any of its threads (Ray's among them);
    the main thread, asleep waiting for the runs, would then not wake until one ends.
    """
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


@pytest.mark.slow
def test_stopping_a_ray_sweep_checkpoints_running_runs_and_starts_no_queued_one(
    tmp_path, ray_cluster
):
    settings = {"address": ray_cluster}
    folders = [tmp_path / "stop" / "base" / f"seed-{seed}" for seed in (1, 2, 3)]
    endless = {**LONG, "train.epochs": 10_000}  # no run can end before the interrupt
    both_running, over = threading.Event(), threading.Event()

    def interrupt_when_two_run() -> None:
        def two_run() -> bool:
            return sum(trained_epochs(f) >= 1 for f in folders) >= 2

        try:
            wait_for(lambda: over.is_set() or two_run(), "two running runs", 300)
            if two_run():
                both_running.set()
        finally:  # whatever happened, a sweep still going is stopped
            if not over.is_set():
                interrupt_the_main_thread()

    interrupter = threading.Thread(target=interrupt_when_two_run)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            sweep(tmp_path, "stop", "ray", settings=settings, fixed=endless, seeds=[1, 2, 3])
    finally:
        over.set()
        interrupter.join()
    assert both_running.is_set(), "two runs never ran at once"
    running = [f for f in folders if f.exists()]
    assert len(running) == 2  # two CPUs: the third task was queued and never started
    for folder in running:  # the sweep returned once they had checkpointed and ended
        assert is_free(folder)
        assert (folder / "checkpoint.pt").is_file() and status(folder) == "interrupted"


# --- SLURM through submitit's local executor ---------------------------------------------


@pytest.fixture(scope="module")
def submitit_installed() -> None:
    pytest.importorskip("submitit")


@pytest.mark.slow
def test_a_slurm_sweep_of_job_arrays_gives_the_local_table(tmp_path, submitit_installed, reference):
    settings = {"cluster": "local", "array": True}
    result = sweep(tmp_path, "grid", "slurm", settings=settings, grid=GRID, seeds=[1, 2])
    assert not result.failed, result.failed
    assert accuracies(result) == reference[1]
    # Submitted before the first wait, in one submit_array call (the local executor
    # starts an array's tasks as separate jobs; SLURM names them JOBID_TASK).
    jobs = [path for path in (result.plan.folder / ".submitit").iterdir() if path.name != "%j"]
    assert len(jobs) == 4


@pytest.mark.slow
def test_a_preempted_slurm_job_is_requeued_and_resumes(tmp_path, submitit_installed, reference):
    folder = tmp_path / "long" / "base" / "seed-1"

    def preempt_after_an_epoch() -> None:
        wait_for(lambda: trained_epochs(folder) >= 1, "the first epoch")
        os.kill(parent_of(lock_holder(folder)), signal.SIGUSR2)  # as SLURM warns the job

    preempter = threading.Thread(target=preempt_after_an_epoch)
    preempter.start()
    result = sweep(tmp_path, "long", "slurm", settings={"cluster": "local"}, fixed=LONG, seeds=[1])
    preempter.join()
    assert not result.failed, result.failed
    log = (folder.parent / "seed-1.log").read_text()
    starts = [line for line in log.splitlines() if line.startswith("=== ")]
    assert len(starts) == 2 and starts[1].endswith(f"--resume {folder}")  # requeued, resumed
    assert_same_runs(reference[0], folder)
