"""sslrun on a GPU: the time of one step, eager and as a replayed CUDA graph, and the
steps per second of many runs sharing one GPU.

    python benchmarks/gpu_throughput.py steps            # section gpu_steps
    python benchmarks/gpu_throughput.py runs --mps       # section gpu_runs

``steps``: seconds per step of supervised, VAT and FAT (λ = 1) on MNIST, 64 labeled +
256 unlabeled images (the shipped recipes), in fp32 and bf16, with the step launched
kernel by kernel (eager) and replayed as a CUDA graph (``train.cuda_graph``); medians
over ``--rounds`` interleaved rounds of ``--steps`` steps after a warm-up. Beside each
pair: the largest difference between the classifier's weights after ``--compare``
steps of each mode from the same seed (the graph computes what eager computes).

``runs``: aggregate training steps per second of N concurrent runs of the FAT
MNIST-100 protocol recipe on one GPU (each its own process, one CPU thread, CUDA
graphs on), for each N of ``--counts``; with ``--mps`` also under CUDA MPS. The
aggregate is N × steps over the longest run's training seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from results_md import write_section
from ssl_plugins.launchers.local import mps_env, start_mps, stop_mps

from ssl_core.engine.build import build_run, load_data
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.data import SplitData
from ssl_core.engine.graphs import WARMUP_STEPS, GraphedSteps
from ssl_core.engine.loop import begin_epoch, draw_batch, prepare_training
from ssl_core.engine.nonfinite import NonFiniteGuard
from ssl_core.engine.signals import StopSignals
from ssl_core.engine.step import train_step
from ssl_core.recipe.spec import load_recipe

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
#: FAT at full strength from the first step (λ = 1), as in benchmarks/precision.py.
STEADY = "plugins.bad_samples.lambda_start=1.0"
METHODS = [
    ("supervised", "supervised_mnist.toml", []),
    ("VAT", "vat_mnist.toml", []),
    ("FAT", "fat_mnist.toml", [STEADY]),
]
PRECISIONS = ("fp32", "bf16")
#: Eager steps before timing (the graph's warm-up and capture are among them).
WARM = WARMUP_STEPS + 5


def timed_steps(
    catalogue: Catalogue, recipe: str, overrides: list[str], data: SplitData, steps: int
) -> tuple[float, torch.nn.Module]:
    """Seconds per step after a warm-up, through the loop's own step; the trained model."""
    budget = ["train.device=cuda", "train.epochs=1", f"train.iterations_per_epoch={steps + WARM}"]
    resolved = load_recipe(RECIPES / recipe, catalogue, [*overrides, *budget])
    run = build_run(resolved, catalogue, data=data)
    try:
        samplers = prepare_training(run)
        tally = begin_epoch(run, 0)
        guard = NonFiniteGuard(resolved.recipe.train.check_every)
        learn = GraphedSteps(WARMUP_STEPS) if resolved.recipe.train.cuda_graph else None
        with StopSignals() as stop:
            for step in range(steps + WARM):
                if step == WARM:
                    torch.cuda.synchronize()
                    started = time.perf_counter()
                batch = draw_batch(run, samplers, 0, step, step)
                train_step(run, batch, tally, stop, guard, learn)
            torch.cuda.synchronize()
        return (time.perf_counter() - started) / steps, run.classifier
    finally:
        run.plugins.unregister()


def largest_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """max |θ_a − θ_b| / max |θ_a| over the parameters and buffers of two models."""
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    floats = [(x.float(), y.float()) for x, y in pairs if x.is_floating_point()]
    gap = max(float((x - y).abs().max()) for x, y in floats)
    scale = max(float(x.abs().max()) for x, _ in floats)
    return gap / scale


def steps(args: argparse.Namespace) -> str:
    catalogue = Catalogue.discover()
    data = load_data(load_recipe(RECIPES / "fat_mnist.toml", catalogue), catalogue, None)
    data = data.to(torch.device("cuda"))
    seconds: dict[tuple[str, str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for label, recipe, extra in METHODS:
            for precision in PRECISIONS:
                for graph in (False, True):
                    overrides = [*extra, f"train.precision={precision}"]
                    overrides.append(f"train.cuda_graph={str(graph).lower()}")
                    taken, _ = timed_steps(catalogue, recipe, overrides, data, args.steps)
                    seconds.setdefault((label, precision, graph), []).append(taken)
    gaps = {}
    for label, recipe, extra in METHODS:
        models = [
            timed_steps(catalogue, recipe, [*extra, f"train.cuda_graph={g}"], data, args.compare)[1]
            for g in ("false", "true")
        ]
        gaps[label] = largest_difference(*models)
    lines = [
        f"Medians over {args.rounds} interleaved rounds of {args.steps} steps after {WARM}"
        " warm-up steps (the graph's capture among them), 64 labeled + 256 unlabeled images;"
        " FAT with λ = 1. Last column: largest difference of the fp32 weights after"
        f" {args.compare} steps, eager against graph, relative to the largest weight.\n",
        "| method | fp32 eager ms | fp32 graph ms | bf16 eager ms | bf16 graph ms"
        " | graph speed-up (fp32, bf16) | max weight difference |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, _, _ in METHODS:
        ms = {
            (p, g): 1000 * statistics.median(seconds[label, p, g])
            for p in PRECISIONS
            for g in (False, True)
        }
        lines.append(
            f"| {label} | {ms['fp32', False]:.2f} | {ms['fp32', True]:.2f}"
            f" | {ms['bf16', False]:.2f} | {ms['bf16', True]:.2f}"
            f" | {ms['fp32', False] / ms['fp32', True]:.2f}×,"
            f" {ms['bf16', False] / ms['bf16', True]:.2f}× | {gaps[label]:.1e} |"
        )
    return "\n".join(lines)


def concurrent_runs(count: int, iterations: int, env: dict[str, str], folder: Path) -> dict:
    """Start ``count`` protocol runs at once on GPU 0; their training seconds and the wall."""
    recipe = RECIPES / "paper" / "fat_mnist100.toml"
    common = ["--set", "train.epochs=1", "--set", f"train.iterations_per_epoch={iterations}"]
    common += ["--set", "train.cuda_graph=true", "--set", "train.threads=1"]
    common += ["--set", "train.bn_stats=labeled", "--quiet"]
    child_env = {**env, "CUDA_VISIBLE_DEVICES": "0", "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ssl_core",
                "train",
                str(recipe),
                *common,
                "--seed",
                str(index + 1),
                "--out",
                str(folder / f"run-{index}"),
            ],
            env=child_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(count)
    ]
    codes = [child.wait() for child in children]
    wall = time.perf_counter() - started
    trained = []
    for index, code in enumerate(codes):
        summary = folder / f"run-{index}" / "summary.json"
        if code == 0 and summary.is_file():
            trained.append(json.loads(summary.read_text())["seconds_per_epoch"])
    return {"wall": wall, "trained": trained, "failed": codes.count(0) != count}


def runs(args: argparse.Namespace) -> str:
    modes = [False, True] if args.mps else [False]
    lines = [
        f"N concurrent runs of recipes/paper/fat_mnist100.toml ({args.iterations} steps each,"
        " CUDA graphs, one CPU thread each) on one GPU. Aggregate: N × steps over the"
        " longest run's training seconds; wall: from the first start to the last end,"
        " process start-up and evaluation included.\n",
        "| runs | MPS | aggregate steps / s | per run steps / s | wall s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mps in modes:
        env = dict(os.environ)
        folder = None
        if mps:
            folder = start_mps()
            env.update(mps_env(folder))
        try:
            for count in args.counts:
                with tempfile.TemporaryDirectory() as scratch:
                    done = concurrent_runs(count, args.iterations, env, Path(scratch))
                if done["failed"] or not done["trained"]:
                    lines.append(f"| {count} | {'yes' if mps else 'no'} | failed | – | – |")
                    continue
                per_run = args.iterations / max(done["trained"])
                lines.append(
                    f"| {count} | {'yes' if mps else 'no'} | {count * per_run:.0f}"
                    f" | {per_run:.0f} | {done['wall']:.1f} |"
                )
                print(lines[-1], flush=True)
        finally:
            if folder is not None:
                stop_mps(folder)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["steps", "runs"], help="what to measure")
    parser.add_argument("--steps", type=int, default=200, help="steps: timed steps a run")
    parser.add_argument("--rounds", type=int, default=3, help="steps: interleaved rounds")
    parser.add_argument("--compare", type=int, default=50, help="steps: eager against graph")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 4, 12, 24], help="runs: N")
    parser.add_argument("--iterations", type=int, default=1000, help="runs: steps a run")
    parser.add_argument("--mps", action="store_true", help="runs: also under CUDA MPS")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device; this benchmark measures the GPU path")
    gpu = torch.cuda.get_device_name(0)
    if args.part == "steps":
        write_section("gpu_steps", f"One step on a GPU ({gpu}): eager and CUDA graph", steps(args))
    else:
        write_section("gpu_runs", f"Many runs on one GPU ({gpu})", runs(args))
    print(f"wrote section gpu_{args.part} of docs/results.md")


if __name__ == "__main__":
    main()
