"""The GPU path, as far as a machine without a GPU can check it.

Batch indices served from a device copy (the same sequence as the host's, uploaded once
per block), the rules of ``train.cuda_graph``, where the launchers put runs (GPU
places, Ray GPU shares, SLURM GPUs for ``train.device = "auto"``), and a run that a
plugin ends early (how a pruned trial ends). tests/test_cuda.py checks the rest on a GPU.
"""

from __future__ import annotations

import json
import os
import threading
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from ssl_plugins.launchers import local as local_launcher
from ssl_plugins.launchers import ray_tasks, slurm_jobs
from ssl_plugins.launchers.local import LocalLauncher, LocalSettings

from ssl_core import Plugin, Run, hookimpl
from ssl_core.api.launcher import RunJob
from ssl_core.engine.data import EpochlessSampler
from ssl_core.engine.graphs import check_graphs
from ssl_core.errors import RecipeError
from ssl_core.experiments.folders import folder_state
from ssl_core.recipe.spec import validate_recipe
from ssl_core.testing import built_run, catalogue_with, train_recipe

from .conftest import tiny_recipe

# --- batch indices on the device ----------------------------------------------------------


@pytest.mark.parametrize("n, batch", [(20, 100), (7, 3), (1000, 256)])
def test_device_indices_are_the_host_sampler_s_sequence(n, batch, monkeypatch):
    monkeypatch.setattr(EpochlessSampler, "AHEAD", 64)  # several blocks in a few batches
    host = EpochlessSampler(n, batch, seed=5)
    served = EpochlessSampler(n, batch, seed=5, device=torch.device("cpu"))
    for _ in range(25):
        assert torch.equal(host.next_indices(), served.next_indices())
    assert host.state_dict()["position"] == served.state_dict()["position"]
    assert torch.equal(host.state_dict()["perm"], served.state_dict()["perm"])


def test_a_restored_device_sampler_continues_the_sequence(monkeypatch):
    monkeypatch.setattr(EpochlessSampler, "AHEAD", 64)
    sampler = EpochlessSampler(30, 16, seed=2, device=torch.device("cpu"))
    for _ in range(5):
        sampler.next_indices()
    state = sampler.state_dict()
    expected = [sampler.next_indices() for _ in range(10)]
    restored = EpochlessSampler(30, 16, seed=99, device=torch.device("cpu"))
    restored.load_state_dict(state)
    assert all(torch.equal(a, restored.next_indices()) for a in expected)


def test_indices_go_to_the_device_once_per_block(monkeypatch):
    uploads = []
    original = EpochlessSampler.upcoming

    def counted(self, count):
        uploads.append(count)
        return original(self, count)

    monkeypatch.setattr(EpochlessSampler, "upcoming", counted)
    sampler = EpochlessSampler(60_000, 250, seed=1, device=torch.device("meta"))
    for _ in range(1000):  # 250,000 indices in 1,000 batches
        sampler.next_indices()
    assert 0 < len(uploads) <= -(-250_000 // EpochlessSampler.AHEAD)  # one per 65,536 at most


# --- train.cuda_graph -------------------------------------------------------------------


class PerStepCounter(Plugin):
    """Works at every step with Python state of its own: never graph-safe."""

    name: ClassVar[str] = "per_step_counter"
    steps = 0

    @hookimpl
    def sslrun_after_step(self) -> None:
        self.steps += 1


def graph_checked(*, device: str, plugins: dict | None = None, **train: Any) -> Run:
    recipe = tiny_recipe(train={"cuda_graph": True, **train})
    if plugins is not None:
        recipe["plugins"] = plugins
    with built_run(recipe, PerStepCounter) as run:
        run.device = torch.device(device)  # the rules read where the run trains
        check_graphs(run)
        return run


def test_cuda_graph_is_a_warning_on_a_machine_without_a_gpu():
    run = graph_checked(device="cpu")
    assert run.warnings == ["train.cuda_graph: no CUDA device here; steps run eagerly"]


def test_cuda_graph_refuses_a_plugin_that_is_not_graph_safe():
    with pytest.raises(RecipeError, match="plugin 'per_step_counter' works at every step"):
        graph_checked(device="cuda", plugins={"supervised": {}, "per_step_counter": {}})


def test_cuda_graph_refuses_skipping_non_finite_batches():
    with pytest.raises(RecipeError, match='on_nonfinite = "skip" reads every step'):
        graph_checked(device="cuda", on_nonfinite="skip")


def test_the_method_plugins_are_graph_safe():
    fat = {"supervised": {}, "vat": {"xi": 0.1}, "bad_samples": {}}
    assert graph_checked(device="cuda", plugins=fat).warnings == []


# --- where the launchers put runs ---------------------------------------------------------


def job(device: str = "cpu", name: str = "r") -> RunJob:
    return RunJob(
        name, Path("/nowhere") / name, Path("/nowhere/log"), (), (), Path("/x"), device=device
    )


class FakeChild:
    """Stands for a run's process: records the GPU it saw and how many shared it."""

    live: ClassVar[dict[str, int]] = {}
    most: ClassVar[dict[str, int]] = {}
    lock = threading.Lock()

    def __init__(self, job: RunJob, env: dict[str, str]) -> None:
        self.device = env.get("CUDA_VISIBLE_DEVICES", "none")
        self.process = None

    def start(self) -> None:
        with self.lock:
            self.live[self.device] = self.live.get(self.device, 0) + 1
            self.most[self.device] = max(self.most.get(self.device, 0), self.live[self.device])

    def wait(self) -> int:
        time.sleep(0.05)
        with self.lock:
            self.live[self.device] -= 1
        return 0


def test_the_local_launcher_shares_each_gpu_among_its_runs(monkeypatch):
    monkeypatch.setattr(local_launcher, "ChildRun", FakeChild)
    FakeChild.live.clear()
    FakeChild.most.clear()
    launcher = LocalLauncher(LocalSettings(devices=[0, 1], runs_per_device=3), None)
    assert launcher.concurrency(20) == 6
    threads = [
        threading.Thread(target=launcher.launch, args=(job(name=str(i)),)) for i in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert FakeChild.most == {"0": 3, "1": 3}  # both GPUs used, never more than 3 a GPU
    assert launcher.env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 6))


def test_mps_without_its_control_program_is_one_line(monkeypatch):
    monkeypatch.setattr(local_launcher.shutil, "which", lambda name: None)
    launcher = LocalLauncher(LocalSettings(devices=[0], mps=True), None)
    with pytest.raises(RecipeError, match="nvidia-cuda-mps-control is not installed here"):
        launcher.prepare([job()])


@pytest.mark.parametrize(
    "device, cluster_gpus, share, expected",
    [
        ("cpu", 4, None, 0.0),
        ("cuda", 4, None, 1.0),
        ("auto", 4, 0.25, 0.25),
        ("auto", 0, None, 0.0),
        ("cuda", 0, 0.5, 0.5),
    ],
)
def test_a_ray_run_reserves_a_gpu_when_it_will_train_on_one(device, cluster_gpus, share, expected):
    launcher = ray_tasks.RayLauncher(ray_tasks.RaySettings(gpus_per_run=share), None)
    launcher.ray = types.SimpleNamespace(cluster_resources=lambda: {"GPU": cluster_gpus})
    assert launcher.gpus(job(device)) == expected


@pytest.mark.parametrize(
    "device, partition_gpus, expected",
    [("cpu", True, 0), ("cuda", False, 2), ("auto", True, 2), ("auto", False, 0)],
)
def test_a_slurm_job_asks_for_gpus_when_its_run_will_use_them(
    device, partition_gpus, expected, monkeypatch
):
    monkeypatch.setattr(slurm_jobs, "partition_has_gpus", lambda partition: partition_gpus)
    launcher = slurm_jobs.SlurmLauncher(slurm_jobs.SlurmSettings(gpus_per_run=2), None)
    assert launcher.resources(job(device)) == (1, expected)


# --- a run a plugin ends early ---------------------------------------------------------------


class StopAfterFirstEpoch(Plugin):
    name: ClassVar[str] = "stop_after_first_epoch"

    @hookimpl
    def sslrun_epoch_end(self, run: Run, epoch: int) -> None:
        run.stop_early(self.name, "enough", status="pruned")


def test_a_run_a_plugin_stops_ends_cleanly_and_stays_ended(tmp_path):
    recipe = tiny_recipe(
        train={"epochs": 3}, plugins={"supervised": {}, "stop_after_first_epoch": {}}
    )
    folder = tmp_path / "run"
    summary = train_recipe(recipe, folder, StopAfterFirstEpoch)
    assert summary is not None and summary["status"] == "pruned"
    assert summary["stopped_early"] == {
        "after_epoch": 1,
        "plugin": "stop_after_first_epoch",
        "reason": "enough",
    }
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads((folder / "summary.json").read_text())["status"] == "pruned"
    again = train_recipe(recipe, folder, StopAfterFirstEpoch, resume=True)
    assert again is not None and again["epochs"] == 1  # not resumed: it has ended
    catalogue = catalogue_with(StopAfterFirstEpoch)
    assert folder_state(folder, validate_recipe(recipe, catalogue, "t.toml")) == "finished"


def test_sslrun_s_own_statuses_cannot_be_claimed():
    with built_run(tiny_recipe()) as run, pytest.raises(ValueError, match="sslrun's own"):
        run.stop_early("x", "why", status="finished")


# --- what else drifts between devices ---------------------------------------------------


def test_a_run_moves_between_devices_on_resume(tmp_path):
    """`sslrun resume DIR --set train.device=...` continues a GPU run on a CPU, and back."""
    from ssl_core.testing import InterruptAt

    recipe = tiny_recipe(
        train={"device": "cpu", "epochs": 2},
        plugins={"supervised": {}, "interrupt_at": {"step": 2}},
    )
    folder = tmp_path / "run"
    assert train_recipe(recipe, folder, InterruptAt) is None  # interrupted, checkpointed
    moved = {**recipe, "train": {**recipe["train"], "device": "auto", "cuda_graph": True}}
    summary = train_recipe(moved, folder, InterruptAt, resume=True)
    assert summary is not None and summary["epochs"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="scores on the CPU where there is no GPU")
def test_a_gpu_run_is_scored_on_a_cpu_where_there_is_no_gpu(tmp_path):
    """`sslrun evaluate` of a run folder that trained on a GPU, on a machine without one."""
    from ssl_core.cli.session import evaluate_run
    from ssl_core.engine.catalogue import Catalogue
    from ssl_core.recipe.spec import dump_toml, read_toml

    folder = tmp_path / "run"
    assert train_recipe(tiny_recipe(train={"device": "cpu", "epochs": 1}), folder) is not None
    catalogue = Catalogue.discover()
    on_the_cpu = evaluate_run(folder, catalogue, None)
    recorded = read_toml(folder / "recipe.toml")
    recorded["train"]["device"] = "cuda"  # as the GPU machine wrote it
    (folder / "recipe.toml").write_text(dump_toml(recorded))
    assert evaluate_run(folder, catalogue, None) == on_the_cpu


def test_a_checkpoint_holds_only_the_run_s_own_gpu_random_state():
    from ssl_core.engine.checkpoint import rng_state, set_rng_state

    state = rng_state(torch.device("cpu"))
    assert state["cuda"] == []
    legacy = {**state, "cuda": [torch.zeros(16, dtype=torch.uint8)] * 8}  # eight GPUs saw it
    set_rng_state(legacy, torch.device("cpu"))  # a machine without them resumes it
    assert torch.equal(torch.get_rng_state(), state["torch"])


@pytest.mark.parametrize("deterministic", [False, True])
def test_float32_is_float32_on_a_gpu_and_cudnn_is_deterministic_when_asked(deterministic):
    torch.backends.cudnn.allow_tf32 = True
    with built_run(tiny_recipe(train={"deterministic": deterministic})):
        assert torch.get_float32_matmul_precision() == "highest"
        assert torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cudnn.deterministic is deterministic
        assert torch.backends.cudnn.benchmark is False


def test_the_weight_normalised_mlp_takes_rank_0_s_initialisation(monkeypatch):
    from ssl_plugins.models import badgan_discriminator as wn

    sent = []
    monkeypatch.setattr(wn.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(wn.dist, "broadcast", lambda tensor, src: sent.append((tensor, src)))
    layer = wn.WeightNormLinear(4, 3)
    layer(torch.randn(8, 4))
    assert [(tensor is layer.scale, src) for tensor, src in sent[:1]] == [(True, 0)]
    assert len(sent) == 2 and sent[1][0] is layer.bias and sent[1][1] == 0
