"""FAT's design choices on MNIST-100, each changed alone: eq. (8)'s form, batch norm of the
bad samples, the K+1 sub-batch, the sign correction, (ε, C), and VAT's ξ.

    python benchmarks/fat_ablations.py --seeds 1 2 3 --epochs 10

Every setting is recipes/fat_mnist.toml (or vat_mnist.toml) with one or two ``--set``
overrides, trained once per seed in at most ``--jobs`` one-thread processes. A second
table measures the ξ pitfall directly: the cosine between the one-iteration power
iteration direction in float32 and the dominant eigenvector of the KL's Hessian found
in float64, on a briefly trained classifier.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from results_md import mean_std, write_section
from torch import Tensor, nn
from vat_fat_mnist import train_curve

from ssl_core.engine.build import build_run
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.evaluation import evaluate
from ssl_core.engine.loop import train
from ssl_core.math.adversarial import power_iteration_direction
from ssl_core.recipe.spec import load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

BAD = "plugins.bad_samples"
FAT, VAT = "fat_mnist.toml", "vat_mnist.toml"
#: (name, label, recipe, overrides); the first FAT and VAT rows are the recipes as shipped.
SETTINGS = [
    ("fat", "FAT (fat_mnist.toml: joint pass, bad samples for 1/4 of the batch)", FAT, []),
    (
        "all_bad",
        "FAT, bad samples for every image (joint pass: half real, half bad)",
        FAT,
        [f"{BAD}.bad_fraction=1.0"],
    ),
    (
        "separate",
        "FAT, bad samples for every image, normalised with their own statistics",
        FAT,
        [f"{BAD}.bad_fraction=1.0", f"{BAD}.batch_norm=separate"],
    ),
    (
        "nobad",
        "FAT without bad samples (VAT with the sign correction)",
        FAT,
        [f"{BAD}.enabled=false"],
    ),
    ("printed", "FAT, eq. (8) as printed (no not-fake term)", FAT, [f"{BAD}.true_loss=entropy"]),
    ("quarter", "FAT, L_true on 1/4 of the batch too", FAT, [f"{BAD}.true_fraction=0.25"]),
    (
        "unsigned",
        "FAT, unsigned direction (variant original)",
        FAT,
        ["plugins.vat.variant=original"],
    ),
    (
        "cheap",
        "FAT, unsigned direction, L_true on 1/4",
        FAT,
        ["plugins.vat.variant=original", f"{BAD}.true_fraction=0.25"],
    ),
    ("eps5", "FAT, ε = 5, C = 6", FAT, ["plugins.vat.eps=5.0", f"{BAD}.radius=6.0"]),
    ("vat", "VAT (vat_mnist.toml: ε = 5, ξ = 0.1)", VAT, []),
    ("vat_eps15", "VAT, ε = 1.5 (FAT's ε)", VAT, ["plugins.vat.eps=1.5"]),
    ("vat_xi", "VAT, ξ = 1e-6", VAT, ["plugins.vat.xi=1e-6"]),
]


def settings_table(args: argparse.Namespace) -> str:
    chosen = [s for s in SETTINGS if not args.only or s[0] in args.only]
    budget = [f"train.epochs={args.epochs}", f"train.iterations_per_epoch={args.iterations}"]
    futures = {}
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        for key, _, recipe, overrides in chosen:
            for seed in args.seeds:
                job = pool.submit(train_curve, recipe, [*overrides, f"seed={seed}", *budget])
                futures[(key, seed)] = job
        curves: dict[str, list[list[dict[str, Any]]]] = {}
        for (key, seed), future in futures.items():
            curve = future.result()
            accs = " ".join(f"{100 * m['test_acc']:.2f}" for m in curve)
            print(f"{key} seed {seed}: {accs}", flush=True)
            curves.setdefault(key, []).append(curve)

    lines = [
        f"{args.epochs} epochs of {args.iterations} steps, seeds {args.seeds}; test accuracy"
        " (%) of the final-epoch model, mean ± std; the curve is the seed mean after each"
        " epoch; p(fake | real) is the mean K+1-th probability the classifier gives real"
        " unlabeled images in the last epoch, kept the share of bad samples kept by the α"
        " filter.\n",
        "| setting | final | best epoch | curve | p(fake \\| real) | kept |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, label, _, _ in chosen:
        runs = curves[key]
        finals = [100 * c[-1]["test_acc"] for c in runs]
        bests = [100 * max(m["test_acc"] for m in c) for c in runs]
        curve = " → ".join(
            f"{statistics.mean(100 * c[e]['test_acc'] for c in runs):.1f}"
            for e in range(args.epochs)
        )
        last = [c[-1] for c in runs]
        fake = mean_std([m["real_p_fake"] for m in last], 3) if "real_p_fake" in last[0] else "–"
        kept = (
            mean_std([100 * m["bad_kept_fraction"] for m in last], 1) + "%"
            if "bad_kept_fraction" in last[0]
            else "–"
        )
        lines.append(
            f"| {label} | {mean_std(finals)} | {mean_std(bests)} | {curve} | {fake} | {kept} |"
        )
    return "\n".join(lines)


# --- ξ in float32 ---------------------------------------------------------------------------


def abs_cosine(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return (a * b).sum(1).abs() / (a.norm(dim=1) * b.norm(dim=1))


def xi_table(args: argparse.Namespace) -> str:
    """|cos| between float32 one-iteration directions and the float64 dominant eigenvector."""
    torch.set_num_threads(1)
    catalogue = Catalogue.discover()
    steps = args.xi_training_steps
    overrides = ["train.epochs=1", f"train.iterations_per_epoch={steps}", "train.threads=1"]
    resolved = load_recipe(RECIPES / "vat_mnist.toml", catalogue, overrides)
    run = build_run(resolved, catalogue)
    try:
        train(run)
    finally:
        run.plugins.unregister()
    model: nn.Module = run.classifier.eval()  # per-sample function: running BN statistics
    accuracy = evaluate(model, run.data.test_x, run.data.test_y, 1000)
    x = run.data.unlabeled_x[:256]
    reference_model = copy.deepcopy(model).double()
    with torch.no_grad():
        clean = model(x)
        clean64 = reference_model(x.double())

    def direction(forward: nn.Module, inputs: Tensor, target: Tensor, xi: float, n: int) -> Tensor:
        generator = torch.Generator().manual_seed(0)  # the same random start every time
        return power_iteration_direction(forward, inputs, target, xi, n, generator)

    reference = direction(reference_model, x.double(), clean64, 1e-6, 30)
    lines = [
        f"Classifier: vat_mnist.toml after {steps} steps ({100 * accuracy:.1f}% test"
        " accuracy), batch norm with running statistics so that each image's Hessian is its"
        " own; 256 training images. Reference: 30 power iterations in float64 with ξ = 1e-6."
        " Each row: one power iteration from the same random start, |cosine| with the"
        " reference per image.\n",
        "| precision | ξ | mean \\|cos\\| | median | share > 0.9 |",
        "| --- | --- | --- | --- | --- |",
    ]
    rows: list[tuple[str, float, Tensor]] = [
        ("float64", 1e-6, direction(reference_model, x.double(), clean64, 1e-6, 1))
    ]
    for xi in (1e-6, 1e-4, 1e-2, 1e-1, 1.0):
        rows.append(("float32", xi, direction(model, x, clean, xi, 1)))
    for precision, xi, d in rows:
        cos = abs_cosine(d, reference)
        lines.append(
            f"| {precision} | {xi:g} | {float(cos.mean()):.3f} | {float(cos.median()):.3f} |"
            f" {100 * float((cos > 0.9).float().mean()):.0f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=234, help="steps per epoch")
    parser.add_argument("--jobs", type=int, default=2, help="training processes at once")
    parser.add_argument("--only", nargs="+", choices=[s[0] for s in SETTINGS], default=None)
    parser.add_argument("--xi-training-steps", type=int, default=234)
    parser.add_argument("--skip-xi", action="store_true")
    parser.add_argument(
        "--tag", default="", help="write to section fat_ablations-TAG (keeps other runs' tables)"
    )
    parser.add_argument("--no-write", action="store_true", help="print, leave docs alone")
    args = parser.parse_args()

    body = (
        "Each row changes one or two settings of `recipes/fat_mnist.toml` or"
        " `recipes/vat_mnist.toml` (MNIST, 100 labels).\n\n"
    )
    body += settings_table(args)
    if not args.skip_xi:
        body += "\n\n**ξ in float32: how much of the direction survives**\n\n" + xi_table(args)
    print(body)
    if not args.no_write:
        title = "FAT ablations on MNIST-100" + ("" if args.skip_xi else " and the ξ pitfall")
        name = "fat_ablations" + (f"-{args.tag}" if args.tag else "")
        write_section(name, title + (f" ({args.tag})" if args.tag else ""), body)


if __name__ == "__main__":
    main()
