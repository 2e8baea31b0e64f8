"""Supervised MNIST-100 baseline: test accuracy and seconds per epoch on this machine.

    python benchmarks/supervised_mnist.py --seeds 1 2 3 --epochs 10

Trains recipes/supervised_mnist.toml (cross-entropy on 100 labels, the paper's BN
MLP) once per seed and writes the mean ± std to docs/results.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from results_md import mean_std, write_section

from ssl_core.engine.build import build_run
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.loop import train
from ssl_core.recipe.spec import load_recipe

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "supervised_mnist.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    catalogue = Catalogue.discover()
    finals, bests, seconds = [], [], []
    for seed in args.seeds:
        overrides = [f"seed={seed}", f"train.epochs={args.epochs}"]
        resolved = load_recipe(RECIPE, catalogue, overrides=overrides)
        run = build_run(resolved, catalogue)
        try:
            summary = train(run)
        finally:
            run.plugins.unregister()
        finals.append(100 * summary["final_test_acc"])
        bests.append(100 * summary["best_test_acc"])
        seconds.append(summary["seconds_per_epoch"])
        print(
            f"seed {seed}: final {finals[-1]:.2f}%  best {bests[-1]:.2f}%"
            f"  {seconds[-1]:.2f} s/epoch"
        )

    body = (
        f"Recipe `recipes/supervised_mnist.toml` (100 labels, 234 iterations of 64 labeled"
        f" images per epoch), {args.epochs} epochs, seeds {args.seeds}, final-epoch model.\n\n"
        "| method | final test acc. (%) | best-on-test acc. (%) | seconds / epoch |\n"
        "| --- | --- | --- | --- |\n"
        f"| supervised (CE only) | {mean_std(finals)} | {mean_std(bests)} |"
        f" {mean_std(seconds)} |\n"
    )
    print(body)
    write_section("supervised_mnist", "Supervised MNIST-100 baseline", body)


if __name__ == "__main__":
    main()
