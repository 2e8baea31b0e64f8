"""What reliability and scale cost: checkpoint time per epoch, DDP throughput on CPU.

1. Checkpoint overhead: the time of one per-epoch checkpoint of the paper's MNIST MLP
   (784-1200-600-300-150-10 with batch norm) with Adam's moments, the samplers and the
   RNG states, written atomically (temporary file, fsync, rename), against the time of
   one training epoch of the VAT recipe measured in the same script.
2. Data-parallel throughput: the VAT MNIST recipe for a few iterations with the same
   global batch (64 labeled + 256 unlabeled) on 1 process and on 2 processes launched
   by ``torchrun`` (gloo, 32 + 128 per process), one thread per process, plus 1 process
   with 2 threads (the same cores). Images per second count labeled and unlabeled
   images of the global batch, over the training time of the epoch (``seconds`` in
   metrics.jsonl: start-up, data loading and evaluation excluded).

Run: ``python benchmarks/reliability.py`` (about two minutes on a 2-core CPU). The
numbers land in docs/results.md, section ``reliability``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from results_md import write_section

from ssl_core.engine.build import build_run
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.checkpoint import CHECKPOINT_NAME, Position, save_checkpoint
from ssl_core.engine.data import EpochlessSampler
from ssl_core.recipe.spec import load_recipe

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "vat_mnist.toml"
ITERATIONS = 40
SAVES = 10


def checkpoint_seconds(folder: Path) -> tuple[list[float], int, int]:
    """Seconds of each of ``SAVES`` checkpoints of the MNIST MLP run, file size, parameters."""
    catalogue = Catalogue.discover()
    resolved = load_recipe(RECIPE, catalogue, overrides=["train.threads=1"])
    run = build_run(resolved, catalogue, out_dir=folder)
    spec = resolved.recipe.train
    run.register_state("classifier", run.classifier)
    run.register_state("optimizer", run.optimizer)
    for name, size, batch in (
        ("labeled_sampler", len(run.data.labeled_y), spec.labeled_batch),
        ("unlabeled_sampler", len(run.data.unlabeled_x), spec.unlabeled_batch),
    ):
        run.register_state(name, EpochlessSampler(size, batch, 0))
    loss = run.model(run.data.unlabeled_x[:256]).logsumexp(1).mean()
    loss.backward()
    run.optimizer.step()  # Adam's moments exist, as after any real epoch
    times = []
    for epoch in range(SAVES):
        started = time.perf_counter()
        save_checkpoint(run, Position(epoch + 1, 0, 0), [], {})
        times.append(time.perf_counter() - started)
    run.plugins.unregister()
    parameters = sum(p.numel() for p in run.classifier.parameters())
    return times, (folder / CHECKPOINT_NAME).stat().st_size, parameters


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sslrun_command() -> list[str]:
    script = Path(sys.executable).parent / "sslrun"
    found = str(script) if script.exists() else shutil.which("sslrun")
    return [found] if found else [sys.executable, "-c", "from ssl_core.cli.app import main; main()"]


def train_seconds(folder: Path, processes: int, threads: int) -> float:
    """Training seconds of one epoch of ``ITERATIONS`` iterations, global batch 64 + 256."""
    out = folder / f"p{processes}-t{threads}"
    overrides = [
        "train.epochs=1",
        f"train.iterations_per_epoch={ITERATIONS}",
        f"train.labeled_batch={64 // processes}",
        f"train.unlabeled_batch={256 // processes}",
        f"train.threads={threads}",
        "train.device=cpu",
    ]
    args = [str(RECIPE), "--out", str(out), "--quiet"]
    for override in overrides:
        args += ["--set", override]
    command = sslrun_command()
    if processes > 1:
        command = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}", "--no-python",
            *command,
        ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([*command, *args], check=True, capture_output=True, env=env)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    return float(record["seconds"])


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "checkpoints").mkdir()
        saves, size, parameters = checkpoint_seconds(folder / "checkpoints")
        runs = {
            (1, 1): train_seconds(folder, 1, 1),
            (1, 2): train_seconds(folder, 1, 2),
            (2, 1): train_seconds(folder, 2, 1),
        }
    images = ITERATIONS * (64 + 256)
    epoch_seconds = runs[(1, 1)] / ITERATIONS * 234  # the recipe's 234 iterations
    load = os.getloadavg()[0]
    body = [
        "Checkpoint of the MNIST MLP run (classifier, Adam, samplers, RNG states; atomic"
        f" write with fsync), {SAVES} saves:",
        "",
        "| file size | seconds per checkpoint (median) | min | max |"
        " VAT epoch, 1 thread (234 iterations, from 40 timed) | overhead per epoch |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {size / 2**20:.1f} MiB | {statistics.median(saves):.3f} | {min(saves):.3f} |"
        f" {max(saves):.3f} | {epoch_seconds:.1f} s |"
        f" {100 * statistics.median(saves) / epoch_seconds:.2f} % |",
        "",
        f"Data-parallel VAT on MNIST, global batch 64 + 256, {ITERATIONS} iterations"
        " (training time only):",
        "",
        "| processes × threads | launch | seconds | images / s | speed-up vs 1 × 1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (processes, threads), seconds in runs.items():
        launch = "torchrun, gloo" if processes > 1 else "sslrun"
        body.append(
            f"| {processes} × {threads} | {launch} | {seconds:.2f} | {images / seconds:.0f} |"
            f" {runs[(1, 1)] / seconds:.2f} |"
        )
    body += [
        "",
        f"Each DDP step all-reduces the gradients of {parameters / 1e6:.2f} M parameters"
        f" ({4 * parameters / 2**20:.1f} MiB of float32) through gloo. Two processes only"
        " pay off when two cores are free for them; on a shared CPU they compete with"
        " everything else, and so do a second torch thread's OpenMP workers (the 1 × 2 row).",
        "",
        f"Load average when the script ended: {load:.1f} (the machine is shared; timings"
        " on a busy CPU vary from run to run).",
    ]
    text = "\n".join(body)
    print(text)
    write_section("reliability", "Reliability and scale: checkpoint cost, DDP on CPU", text)


if __name__ == "__main__":
    main()
