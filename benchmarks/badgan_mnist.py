"""Bad GAN on MNIST-100 and MNIST-20: test accuracy over seeds and cost per epoch vs supervised.

    python benchmarks/badgan_mnist.py                 # 3 seeds, 4 epochs of 100 iterations
    python benchmarks/badgan_mnist.py --quick         # 1 seed, 1 epoch of 20 iterations
    python benchmarks/badgan_mnist.py --model mnist_wn_mlp --section badgan_mnist_wn \
        --set optim.lr=0.003 --set optim.beta1=0.5 ...   # Bad GAN's own discriminator

Trains recipes/badgan_mnist.toml and recipes/badgan_mnist20.toml (the paper's BN MLP
as discriminator, eq. (3) terms, a feature-matching MLP generator) and, with the same
batch sizes and budget, recipes/supervised_mnist.toml on the same labels, once per
seed. Jobs run in at most ``--procs`` processes of one thread each, so Bad GAN and
supervised are timed under the same conditions; the ratio of their seconds per epoch
is the Table 3 figure (the paper reports 3.20 on CIFAR-10, without PixelCNN++).
Writes the table to docs/results.md (section ``badgan_mnist``).
"""

from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from results_md import mean_std, write_section

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
BADGAN = {100: "badgan_mnist.toml", 20: "badgan_mnist20.toml"}
PAPER = {("badgan", 100): "99.20", ("badgan", 20): "80.16"}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train one recipe in this process with one thread; return its summary and the job."""
    import torch

    from ssl_core.engine.build import build_run
    from ssl_core.engine.catalogue import Catalogue
    from ssl_core.engine.loop import train
    from ssl_core.recipe.spec import load_recipe

    torch.set_num_threads(1)
    catalogue = Catalogue.discover()
    resolved = load_recipe(RECIPES / job["recipe"], catalogue, overrides=job["overrides"])
    run = build_run(resolved, catalogue)
    try:
        summary = train(run)
    finally:
        run.plugins.unregister()
    return {**job, **summary}


def jobs_for(args: argparse.Namespace) -> list[dict[str, Any]]:
    jobs = []
    for labels in args.labels:
        for seed in args.seeds:
            common = [
                f"seed={seed}",
                f"data.labels={labels}",
                f"train.epochs={args.epochs}",
                f"train.iterations_per_epoch={args.iterations}",
                "train.threads=1",
                f"model.name={args.model}",
            ]
            # Overrides of the badgan table go to the Bad GAN jobs only.
            shared = [o for o in args.set if not o.startswith("plugins.badgan.")]
            methods = [("badgan", BADGAN[labels], [*common, *args.set])]
            if not args.no_supervised:
                methods.append(("supervised", "supervised_mnist.toml", [*common, *shared]))
            for method, recipe, overrides in methods:
                jobs.append(
                    {
                        "method": method,
                        "labels": labels,
                        "seed": seed,
                        "recipe": recipe,
                        "overrides": overrides,
                    }
                )
    return jobs


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    rows = [
        "| labels | method | final test acc. (%) | best-epoch test acc. (%) | seconds / epoch"
        " | time vs supervised | paper (%) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for labels in args.labels:
        groups = {
            method: [r for r in results if r["labels"] == labels and r["method"] == method]
            for method in ("supervised", "badgan")
        }
        base = [r["seconds_per_epoch"] for r in groups["supervised"]]
        for method, group in groups.items():
            if not group:
                continue
            seconds = [r["seconds_per_epoch"] for r in group]
            ratio = f"{statistics.mean(seconds) / statistics.mean(base):.2f}" if base else "–"
            rows.append(
                f"| {labels} | {method} | {mean_std([100 * r['final_test_acc'] for r in group])}"
                f" | {mean_std([100 * r['best_test_acc'] for r in group])}"
                f" | {mean_std(seconds)} | {ratio} | {PAPER.get((method, labels), '–')} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--labels", type=int, nargs="+", default=[100, 20], choices=[100, 20])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=100, help="iterations per epoch")
    parser.add_argument("--model", default="mnist_mlp", help="discriminator, e.g. mnist_wn_mlp")
    parser.add_argument("--procs", type=int, default=2, help="parallel processes (1 thread each)")
    parser.add_argument(
        "--set", action="append", default=[], help="recipe override for every job (repeatable)"
    )
    parser.add_argument("--section", default="badgan_mnist", help="section of docs/results.md")
    parser.add_argument("--no-supervised", action="store_true", help="skip the baseline runs")
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, 1 epoch of 20 iterations (own section)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.quick:  # a smoke run: never overwrites the real numbers' section
        args.seeds, args.epochs, args.iterations = args.seeds[:1], 1, 20
        args.section += "_quick"

    with ProcessPoolExecutor(max_workers=args.procs) as pool:
        results = []
        for result in pool.map(run_job, jobs_for(args)):
            results.append(result)
            print(
                f"{result['method']:>10} labels {result['labels']:>3} seed {result['seed']}:"
                f" final {100 * result['final_test_acc']:.2f}%"
                f"  best {100 * result['best_test_acc']:.2f}%"
                f"  {result['seconds_per_epoch']:.1f} s/epoch",
                flush=True,
            )

    overrides = f", overrides `{' '.join(args.set)}`" if args.set else ""
    body = (
        "Recipes `recipes/badgan_mnist.toml` (100 labels) and `recipes/badgan_mnist20.toml`"
        f" (20 labels), discriminator `{args.model}`, against `recipes/supervised_mnist.toml`"
        f" on the same labels{overrides}. Budget: {args.epochs} epoch(s) of"
        f" {args.iterations} iterations (recipe batches: 64 labeled + 256 unlabeled, and 256"
        f" generated, unless overridden), seeds {args.seeds}, {args.procs} processes of 1"
        " thread on a shared 2-core CPU. Accuracy of the final-epoch model on the 10,000 test"
        ' images; "best-epoch" picks the best epoch on the test set (optimistic). The'
        " paper's numbers come from hundreds of epochs and a PixelCNN++ density term; this"
        " budget is far smaller.\n\n" + table(results, args) + "\n"
    )
    print(body)
    if not args.no_write:
        title = "Bad GAN on MNIST (100 and 20 labels)"
        title += "" if args.model == "mnist_mlp" else f", discriminator {args.model}"
        write_section(args.section, title, body)


if __name__ == "__main__":
    main()
