"""Data-parallel training on CPU with gloo and 2 processes, on loopback only.

Two spawned processes get the environment torchrun gives its workers (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and call what ``sslrun RECIPE``
calls, :func:`ssl_core.cli.session.run_recipe`. In one start-up they

1. train with per-process batches half the size of a single-process run's: the loss
   trajectory and the final weights match the single process's within float32
   rounding (gradients are summed across ranks in another order). The recipe has VAT
   with weight 0, so VAT's extra forwards through the DDP module and its
   input-gradient power iteration run under DDP without changing the trajectory (its
   random start differs per rank by design);
2. interrupt a run of VAT with batch norm (running statistics broadcast from rank 0)
   mid-epoch with SIGINT, resume it, and end bit-identical to an uninterrupted
   2-process run.

``benchmarks/reliability.py`` runs the same recipes through the ``torchrun`` command.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from ssl_core.cli.session import run_recipe
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_core.engine.distributed import World
from ssl_core.errors import RecipeError, TrainingInterrupted
from ssl_core.recipe.spec import dump_toml

from .conftest import tiny_recipe
from .test_resume import SendSignal, assert_identical, final_states, losses, plugin_module

#: Per-process batches; the single-process reference uses twice these.
TRAIN = {
    "epochs": 2,
    "iterations_per_epoch": 4,
    "labeled_batch": 4,
    "unlabeled_batch": 16,
    "threads": 1,
    "check_every": 2,  # ranks agree on a signal when the guard is read: every 2 steps
}
MODEL = {"name": "mlp", "hidden": [16], "batch_norm": False}
TOLERANCE = 1e-5
TRAJECTORY_PLUGINS: dict[str, Any] = {
    "supervised": {},
    "vat": {"weight": 0.0, "eps": 0.5, "xi": 0.1},
}
RESUME_PLUGINS: dict[str, Any] = {"supervised": {}, "vat": {"eps": 0.5, "xi": 0.1}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_recipe(
    path: Path, plugins: dict[str, Any], scale: int = 1, batch_norm: bool = False
) -> Path:
    spec = {**TRAIN}
    spec["labeled_batch"] *= scale
    spec["unlabeled_batch"] *= scale
    model = {**MODEL, "batch_norm": batch_norm}
    path.write_text(dump_toml(tiny_recipe(model=model, train=spec, plugins=plugins)))
    return path


# --- the adapter without a process group ----------------------------------------------


@pytest.mark.parametrize(("n", "size"), [(10, 2), (7, 3), (2, 4), (0, 2)])
def test_evaluation_shares_cover_every_example_exactly_once(n, size):
    shares = [list(World(rank=r, size=size).eval_range(n)) for r in range(size)]
    assert sorted(i for share in shares for i in share) == list(range(n))


def test_ranks_keep_disjoint_slices_that_rebuild_the_global_batch():
    batch = torch.arange(12)
    slices = [World(rank=r, size=3).shard(batch) for r in range(3)]
    assert torch.equal(torch.cat(slices), batch)


def test_without_torchrun_the_world_is_one_process():
    world = World.from_environment("cpu", env={})
    assert (world.rank, world.size, world.is_main) == (0, 1, True)
    assert World.from_environment("cpu", env={"WORLD_SIZE": "1", "RANK": "0"}) == world


def test_a_malformed_torchrun_environment_is_a_one_line_error():
    with pytest.raises(RecipeError, match="WORLD_SIZE='two'"):
        World.from_environment("cpu", env={"WORLD_SIZE": "two"})
    with pytest.raises(RecipeError, match="RANK=5 is outside WORLD_SIZE=2"):
        World.from_environment("cpu", env={"WORLD_SIZE": "2", "RANK": "5"})


# --- spawned ranks: exact resume ------------------------------------------------------


def rank_main(rank: int, ports: list[int], folder: str) -> None:
    """One rank, with the environment torchrun would give it; four runs in a row."""
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"},
        MASTER_ADDR="127.0.0.1",
    )
    catalogue = Catalogue.discover(extra_modules=[plugin_module("ddp_helpers", SendSignal)])
    root = Path(folder)

    def run(port: int, recipe: str, **where: Path) -> None:
        os.environ["MASTER_PORT"] = str(port)  # a fresh rendezvous for every run
        run_recipe(root / recipe, catalogue, quiet=True, **where)

    run(ports[0], "trajectory.toml", out=root / "trajectory")
    try:
        run(ports[1], "interrupted.toml", out=root / "interrupted")
        raise AssertionError("the run was not interrupted")
    except TrainingInterrupted as exc:
        assert exc.exit_code == 130
    if rank == 0:  # the writer; the other rank may get here before the file is replaced
        saved = load_checkpoint(root / "interrupted" / CHECKPOINT_NAME)
        assert saved["position"] == {"epoch": 1, "iteration": 2, "global_step": 6}
    run(ports[2], "interrupted.toml", resume=root / "interrupted")
    run(ports[3], "reference.toml", out=root / "reference")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four runs of two spawned ranks, in one folder."""
    root = tmp_path_factory.mktemp("ddp")
    write_recipe(root / "trajectory.toml", TRAJECTORY_PLUGINS)
    interrupted = {**RESUME_PLUGINS, "send_signal": {"at_step": 5}}
    write_recipe(root / "interrupted.toml", interrupted, batch_norm=True)
    write_recipe(root / "reference.toml", {**RESUME_PLUGINS, "send_signal": {}}, batch_norm=True)
    ports = [free_port() for _ in range(4)]
    mp.start_processes(rank_main, args=(ports, str(root)), nprocs=2, start_method="spawn")
    return root


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(two_ranks, tmp_path):
    single = write_recipe(tmp_path / "single.toml", TRAJECTORY_PLUGINS, scale=2)
    run_recipe(single, Catalogue.discover(), out=tmp_path / "single", quiet=True)

    ddp, ref = losses(two_ranks / "trajectory"), losses(tmp_path / "single")
    assert [r["epoch"] for r in ddp] == [1, 2]  # one writer: no duplicate records
    for a, b in zip(ddp, ref, strict=True):
        assert a["ce"] == pytest.approx(b["ce"], rel=TOLERANCE)
        assert a["vat"] == b["vat"] == 0.0
        assert abs(a["test_acc"] - b["test_acc"]) <= 0.01  # one of 100 test points at most
    ddp_weights = final_states(two_ranks / "trajectory")["classifier"]
    for name, value in final_states(tmp_path / "single")["classifier"].items():
        assert torch.allclose(ddp_weights[name], value, rtol=0, atol=TOLERANCE), name


@pytest.mark.slow
def test_the_checkpoint_holds_each_ranks_own_random_state(two_ranks):
    checkpoint = load_checkpoint(two_ranks / "trajectory" / CHECKPOINT_NAME)
    assert checkpoint["world_size"] == 2 and len(checkpoint["ranks"]) == 2
    rngs = [rank["rng"]["torch"] for rank in checkpoint["ranks"]]
    assert not torch.equal(rngs[0], rngs[1])


@pytest.mark.slow
def test_two_ranks_interrupted_mid_epoch_resume_bit_identical(two_ranks):
    position = load_checkpoint(two_ranks / "interrupted" / CHECKPOINT_NAME)["position"]
    assert position == {"epoch": 2, "iteration": 0, "global_step": 8}  # finished
    assert losses(two_ranks / "interrupted") == losses(two_ranks / "reference")
    assert_identical(final_states(two_ranks / "interrupted"), final_states(two_ranks / "reference"))
    summary = json.loads((two_ranks / "interrupted" / "summary.json").read_text())
    assert summary["status"] == "finished"
