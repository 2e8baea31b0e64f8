"""float32 against bfloat16: step time, VAT's direction, accuracy at equal steps.

    python benchmarks/precision.py --parts timing      # a few minutes; quiet machine
    python benchmarks/precision.py --parts direction   # about a minute
    python benchmarks/precision.py --parts accuracy    # 12 runs of 2,340 steps
    python benchmarks/precision.py --device cuda ...   # the same on a GPU (own sections)

Each part writes its own section of docs/results.md, with the CPU and whether it has
AMX (bfloat16 matrix units) and AVX-512 BF16:

- ``timing`` (``precision_timing``): seconds per step of supervised, VAT and FAT
  (recipes/fat_mnist.toml with λ = 1, its cost after the warm-up) in fp32 and bf16, on
  1 and 2 threads, through sslrun and as the bare PyTorch loop of
  ``benchmarks/vat_fat_mnist.py`` (the framework's overhead), rounds interleaved; and a
  compiled classifier (``torch.compile``) against the eager one;
- ``direction`` (``precision_direction``): on a trained MNIST model, the cosine of VAT's
  direction with the float64 dominant eigenvector of the KL's Hessian, for the
  finite-difference power iteration (what sslrun ships: float32 even in a bf16 step,
  ξ = 0.1 or the paper's 1e-6; and, for comparison, run in bfloat16) and for an exact
  Hessian-vector product (forward-mode Jd, then Jᵀ(diag p − ppᵀ)Jd), with its time;
- ``accuracy`` (``precision_accuracy``): FAT and VAT on MNIST-100, fp32 against bf16,
  the same seeds and steps (default 3 seeds × 10 epochs × 234 steps).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from results_md import mean_std, write_section
from torch import Tensor, nn
from vat_fat_mnist import RECIPES, bare_step_seconds, framework_step_seconds, train_curve

from ssl_core.engine.bn import untracked_bn_stats
from ssl_core.engine.build import build_run, load_data
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.loop import train
from ssl_core.engine.optim import adam
from ssl_core.math.adversarial import (
    kl_divergence_from_logits,
    normalize_per_sample,
    sign_corrected_direction,
)
from ssl_core.recipe.spec import load_recipe

STEADY = "plugins.bad_samples.lambda_start=1.0"  # λ = 1: FAT's cost after the warm-up
METHODS = [("supervised", "supervised_mnist.toml", []), ("VAT", "vat_mnist.toml", [])]
METHODS.append(("FAT", "fat_mnist.toml", [STEADY]))
PRECISIONS = ("fp32", "bf16")


def cpu_flags() -> str:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        return "CPU flags unknown"
    found = [name for name in ("amx_bf16", "avx512_bf16") if name in flags]
    return "has " + " and ".join(found) if found else "no AMX, no AVX-512 BF16"


# --- timing -----------------------------------------------------------------------------


def bare_settings(catalogue: Catalogue) -> dict[str, dict[str, float]]:
    """The recipes' numbers the bare loop needs (it is written for their settings)."""
    fat = load_recipe(RECIPES / "fat_mnist.toml", catalogue)
    vat = load_recipe(RECIPES / "vat_mnist.toml", catalogue).plugin_settings["vat"]
    fat_vat, bad = fat.plugin_settings["vat"], fat.plugin_settings["bad_samples"]
    common = {
        "lr": fat.recipe.optim.lr,
        "eps": fat_vat.eps,
        "xi": fat_vat.xi,
        "radius": bad.radius,
        "alpha": bad.alpha,
        "true_fraction": bad.true_fraction,
        "bad_fraction": bad.bad_fraction,
    }
    return {"supervised": common, "VAT": {**common, "eps": vat.eps, "xi": vat.xi}, "FAT": common}


def compiled_step_seconds(model: nn.Module, x: Tensor, y: Tensor, steps: int) -> float:
    """A supervised forward/backward/Adam step of ``model`` (compiled or not), per step."""
    optimizer = adam(model.parameters(), lr=1e-3)
    for _ in range(3):  # warm-up (compilation happens here)
        nn.functional.cross_entropy(model(x), y).backward()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def timing(args: argparse.Namespace) -> str:
    catalogue = Catalogue.discover()
    resolved = load_recipe(RECIPES / "fat_mnist.toml", catalogue)
    data = load_data(resolved, catalogue, None)
    settings = bare_settings(catalogue)
    seed = resolved.recipe.seed
    framework: dict[tuple, list[float]] = {}
    bare: dict[tuple, list[float]] = {}
    for round_ in range(args.rounds):
        for threads in args.threads:
            torch.set_num_threads(threads)
            for precision in PRECISIONS:
                for label, recipe, overrides in METHODS:
                    key = (threads, precision, label)
                    extra = [*overrides, f"train.precision={precision}"]
                    extra.append(f"train.device={args.device}")
                    seconds, _ = framework_step_seconds(
                        catalogue, recipe, extra, data, args.timing_steps, threads
                    )
                    framework.setdefault(key, []).append(seconds)
                    if args.device == "cpu":  # the bare loop is written for the CPU
                        seconds, _ = bare_step_seconds(
                            label, data, seed, args.timing_steps, settings[label], precision
                        )
                        bare.setdefault(key, []).append(seconds)
        print(f"timing round {round_ + 1}/{args.rounds} done", flush=True)
    median = {k: statistics.median(v) for k, v in framework.items()}
    bare_median = {k: statistics.median(v) for k, v in bare.items()}
    lines = [
        f"{cpu_flags()}. Medians over {args.rounds} interleaved rounds of {args.timing_steps}"
        " steps of 64 labeled + 256 unlabeled images; FAT with λ = 1. Overhead: sslrun"
        " against the bare loop doing the same arithmetic in the same precision.\n",
        "| threads | method | fp32 s / step | bf16 s / step | bf16 speed-up | × VAT (fp32, bf16)"
        " | overhead fp32 | overhead bf16 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for threads in args.threads:
        for label, _, _ in METHODS:
            fp32, bf16 = median[threads, "fp32", label], median[threads, "bf16", label]
            vat32, vat16 = median[threads, "fp32", "VAT"], median[threads, "bf16", "VAT"]
            over = [
                f"{100 * (median[threads, p, label] / bare_median[threads, p, label] - 1):+.1f}%"
                if (threads, p, label) in bare_median
                else "–"
                for p in PRECISIONS
            ]
            lines.append(
                f"| {threads} | {label} | {fp32:.4f} | {bf16:.4f} | {fp32 / bf16:.2f}×"
                f" | {fp32 / vat32:.2f}, {bf16 / vat16:.2f} | {over[0]} | {over[1]} |"
            )
    if args.device == "cpu":
        lines += ["", compile_comparison(data, args)]
    return "\n".join(lines)


def compile_comparison(data, args: argparse.Namespace) -> str:
    """Eager against ``torch.compile`` for the classifier's supervised step."""
    torch.set_num_threads(1)
    from ssl_plugins.models.paper import MLP

    x, y = data.unlabeled_x[:256], data.labeled_y.repeat(3)[:256]
    rows = []
    for precision in PRECISIONS:
        times = {}
        for kind in ("eager", "compiled"):
            torch.manual_seed(0)
            model = MLP(784, [1200, 600, 300, 150], 10)
            model = torch.compile(model) if kind == "compiled" else model
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                try:
                    times[kind] = compiled_step_seconds(model, x, y, args.timing_steps)
                except Exception as exc:  # a missing compiler is a result too
                    times[kind] = None
                    print(f"torch.compile failed: {type(exc).__name__}: {exc}", flush=True)
        compiled = f"{times['compiled']:.4f}" if times["compiled"] else "failed"
        ratio = f"{times['eager'] / times['compiled']:.2f}×" if times["compiled"] else "–"
        rows.append(f"| {precision} | {times['eager']:.4f} | {compiled} | {ratio} |")
    return "\n".join(
        [
            "`torch.compile` of the classifier, a supervised step on 256 images (one thread,"
            f" {args.timing_steps} steps after 3 warm-up steps):\n",
            "| precision | eager s / step | compiled s / step | speed-up |",
            "| --- | --- | --- | --- |",
            *rows,
        ]
    )


# --- direction ----------------------------------------------------------------------------


def exact_directions(model: nn.Module, x: Tensor) -> Tensor:
    """Per sample, float64: the top eigenvector of H = Jᵀ(diag p − ppᵀ)J, the KL's Hessian.

    At r = 0 the Hessian of KL(p(x) ‖ p(x + r)) is exactly this Gauss-Newton form: the
    second derivative of the logits is multiplied by p − p = 0.
    """
    model = copy.deepcopy(model).double().eval()
    vectors = []
    for sample in x.double():
        flat = sample.flatten()

        def logits(z: Tensor, shape=sample.shape) -> Tensor:
            return model(z.view(1, *shape))[0]

        jacobian = torch.func.jacrev(logits)(flat)  # (K, D)
        p = torch.softmax(logits(flat), dim=-1)
        curvature = jacobian.T @ (torch.diag(p) - torch.outer(p, p)) @ jacobian
        vectors.append(torch.linalg.eigh(curvature).eigenvectors[:, -1])
    return torch.stack(vectors)


def finite_difference(model: nn.Module, x: Tensor, d: Tensor, xi: float, bf16: bool) -> Tensor:
    """One power iteration ∇_d KL(p(x) ‖ p(x + ξd)), in float32 or under bf16 autocast."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        with torch.no_grad():
            clean = model(x).float()
        d = d.clone().requires_grad_(True)
        kl = kl_divergence_from_logits(clean, model(x + xi * d).float()).sum()
        (grad,) = torch.autograd.grad(kl, d)
    return normalize_per_sample(grad.float())


def hessian_vector(model: nn.Module, x: Tensor, d: Tensor, bf16: bool) -> Tensor:
    """H·d = Jᵀ(diag p − ppᵀ)(Jd): forward-mode Jd, then one backward; no ξ."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        x = x.clone().requires_grad_(True)
        logits, jd = torch.func.jvp(model, (x,), (d,))
        p = torch.softmax(logits.float(), dim=-1).detach()
        jd = jd.float().detach()
        u = p * jd - p * (p * jd).sum(-1, keepdim=True)
        (hd,) = torch.autograd.grad(logits.float(), x, grad_outputs=u)
    return normalize_per_sample(hd.float())


def trained_model(args: argparse.Namespace) -> tuple[nn.Module, Tensor]:
    """FAT on MNIST-100 for a short budget (fp32): the network whose curvature is probed."""
    catalogue = Catalogue.discover()
    budget = [f"train.epochs={args.direction_epochs}", "train.threads=1"]
    resolved = load_recipe(RECIPES / "fat_mnist.toml", catalogue, budget)
    run = build_run(resolved, catalogue)
    try:
        train(run)
    finally:
        run.plugins.unregister()
    return run.classifier.eval(), run.data.test_x


def direction(args: argparse.Namespace) -> str:
    torch.set_num_threads(1)
    model, images = trained_model(args)
    x = images[: args.direction_samples]
    expected = exact_directions(model, x)
    start = normalize_per_sample(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    methods: dict[str, Callable[[Tensor], Tensor]] = {
        "finite difference, ξ = 0.1, fp32 (sslrun)": lambda d: finite_difference(
            model, x, d, 0.1, False
        ),
        "finite difference, ξ = 1e-6, fp32": lambda d: finite_difference(model, x, d, 1e-6, False),
        "finite difference, ξ = 0.1, bf16": lambda d: finite_difference(model, x, d, 0.1, True),
        "Hessian-vector product, fp32": lambda d: hessian_vector(model, x, d, False),
        "Hessian-vector product, bf16": lambda d: hessian_vector(model, x, d, True),
    }
    batch = images[:256]
    batch_start = normalize_per_sample(torch.randn(batch.shape))
    timed = {
        "finite difference, ξ = 0.1, fp32 (sslrun)": lambda: finite_difference(
            model, batch, batch_start, 0.1, False
        ),
        "finite difference, ξ = 0.1, bf16": lambda: finite_difference(
            model, batch, batch_start, 0.1, True
        ),
        "Hessian-vector product, fp32": lambda: hessian_vector(model, batch, batch_start, False),
        "Hessian-vector product, bf16": lambda: hessian_vector(model, batch, batch_start, True),
    }
    agreement = sign_agreement(model, batch, batch_start)
    lines = [
        f"FAT on MNIST-100 trained for {args.direction_epochs} epochs (fp32), evaluated with"
        f" its running batch-norm statistics (no coupling between samples) on"
        f" {args.direction_samples} test images; the exact direction is the top eigenvector of"
        " Jᵀ(diag p − ppᵀ)J in float64. Every method starts from the same random unit"
        " vectors; |cos| with the exact direction after 1 and 3 iterations, mean (min)."
        " Time: one iteration on a batch of 256 images, one thread, median of 5.\n",
        "| method | 1 iteration | 3 iterations | s / iteration (256 images) |",
        "| --- | --- | --- | --- |",
    ]
    for name, method in methods.items():
        cells = []
        for iterations in (1, 3):
            d = start
            for _ in range(iterations):
                d = method(d)
            cosine = (d.flatten(1).double() * expected).sum(1).abs()
            cells.append(f"{cosine.mean():.3f} ({cosine.min():.3f})")
        seconds = f"{training_mode_seconds(model, timed[name]):.4f}" if name in timed else "–"
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {seconds} |")
    lines += [
        "",
        "Times are of one iteration in training mode (batch statistics, running ones"
        " untouched), as in a step; the finite difference needs one more forward for the"
        " clean logits, which the Hessian-vector product gets from its own forward.",
        f"The sign correction (§4.2) at ε = 1.5 on the same 256 images, in training mode,"
        f" picks the same side in bf16 as in fp32 for {100 * agreement:.1f}% of them.",
    ]
    return "\n".join(lines)


def training_mode_seconds(model: nn.Module, iteration: Callable[[], Tensor]) -> float:
    """Median of 5 timings of ``iteration`` with batch norm on batch statistics, untracked."""
    samples = []
    model.train()
    with untracked_bn_stats(model):
        for _ in range(6):
            begin = time.perf_counter()
            iteration()
            samples.append(time.perf_counter() - begin)
    model.eval()
    return statistics.median(samples[1:])


def sign_agreement(model: nn.Module, x: Tensor, start: Tensor) -> float:
    """Share of samples whose ±v choice at ε = 1.5 is the same in bf16 as in fp32."""
    model.train()
    with untracked_bn_stats(model):
        with torch.no_grad():
            clean = model(x)
        v = finite_difference(model, x, start, 0.1, False)
        _, fp32 = sign_corrected_direction(model, x, clean, v, 1.5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, bf16 = sign_corrected_direction(model, x, clean, v, 1.5)
    model.eval()
    return float((fp32 == bf16).float().mean())


# --- accuracy -------------------------------------------------------------------------------


def accuracy(args: argparse.Namespace) -> str:
    budget = [f"train.epochs={args.epochs}", f"train.iterations_per_epoch={args.iterations}"]
    jobs = {}
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        for method in args.methods:
            for precision in PRECISIONS:
                for seed in args.seeds:
                    overrides = [f"seed={seed}", f"train.precision={precision}", *budget]
                    overrides.append(f"train.device={args.device}")
                    recipe = f"{method}_mnist.toml"
                    jobs[method, precision, seed] = pool.submit(train_curve, recipe, overrides)
        finals: dict[tuple[str, str], list[float]] = {}
        seconds: dict[tuple[str, str], list[float]] = {}
        for (method, precision, seed), future in jobs.items():
            curve = future.result()
            print(f"{method} {precision} seed {seed}: {curve[-1]['test_acc']:.4f}", flush=True)
            finals.setdefault((method, precision), []).append(100 * curve[-1]["test_acc"])
            seconds.setdefault((method, precision), []).extend(m["seconds"] for m in curve)
    lines = [
        ", ".join(f"recipes/{method}_mnist.toml" for method in args.methods)
        + f", {args.epochs} epochs of {args.iterations} steps, seeds {args.seeds},"
        f" {args.jobs} runs of one thread at a time; final-epoch test accuracy (%),"
        " mean ± std, and the difference of the means.\n",
        "| method | fp32 | bf16 | bf16 − fp32 | s / epoch fp32 | s / epoch bf16 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for method in args.methods:
        a, b = finals[method, "fp32"], finals[method, "bf16"]
        gap = statistics.mean(b) - statistics.mean(a)
        lines.append(
            f"| {method.upper()} | {mean_std(a)} | {mean_std(b)} | {gap:+.2f}"
            f" | {statistics.median(seconds[method, 'fp32']):.1f}"
            f" | {statistics.median(seconds[method, 'bf16']):.1f} |"
        )
    return "\n".join(lines)


PARTS = {
    "timing": ("precision_timing", "Precision: step time in fp32 and bf16", timing),
    "direction": ("precision_direction", "Precision: VAT's direction against float64", direction),
    "accuracy": ("precision_accuracy", "Precision: accuracy at equal steps", accuracy),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--timing-steps", type=int, default=30, help="steps per timed run")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--direction-epochs", type=int, default=2)
    parser.add_argument("--direction-samples", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=234, help="steps per epoch")
    parser.add_argument("--jobs", type=int, default=2, help="accuracy runs at a time")
    parser.add_argument("--no-write", action="store_true", help="print, leave docs alone")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--methods", nargs="+", choices=["fat", "vat"], default=["fat", "vat"])
    args = parser.parse_args()
    for part in args.parts:
        name, title, measure = PARTS[part]
        if args.device == "cuda":
            name, title = f"{name}_cuda", f"{title} (CUDA: {torch.cuda.get_device_name(0)})"
        if part == "accuracy" and args.methods != ["fat", "vat"]:
            name, title = f"{name}_{'_'.join(args.methods)}", f"{title}: {', '.join(args.methods)}"
        body = measure(args)
        print(f"## {title}\n\n{body}\n", flush=True)
        if not args.no_write:
            write_section(name, title, body)


if __name__ == "__main__":
    main()
