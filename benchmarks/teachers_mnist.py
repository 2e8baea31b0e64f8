"""VAT with an EMA copy and with Mean Teacher on MNIST-100: what each scores.

    python benchmarks/teachers_mnist.py --seeds 1-3 --jobs 2

Trains recipes/vat_ema_mnist.toml and recipes/vat_mean_teacher_mnist.toml (10 epochs of
234 steps) as a resumable sweep (sweeps/teachers), and writes the ``teachers_mnist``
section of docs/results.md: for each recipe, the final-epoch test accuracy of the
classifier and of its average (``ema_test_acc``, ``mean_teacher_test_acc``), mean ± std
over the seeds, and the seconds per epoch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from results_md import mean_std, write_section

from ssl_core.experiments.grid import SweepSpec, parse_seeds
from ssl_core.experiments.sweep import run_sweep

REPO = Path(__file__).resolve().parent.parent
RECIPES = {"vat_ema_mnist": "ema", "vat_mean_teacher_mnist": "mean_teacher"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1-3")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    spec = SweepSpec(
        recipes=[REPO / "recipes" / f"{name}.toml" for name in RECIPES],
        name="teachers",
        seeds=parse_seeds(args.seeds),
        jobs=args.jobs,
    )
    result = run_sweep(spec, root=REPO / "sweeps")
    lines = [
        "Recipes `recipes/vat_ema_mnist.toml` and `recipes/vat_mean_teacher_mnist.toml`:"
        " VAT on MNIST-100 (10 epochs of 234 steps, 64 labeled + 256 unlabeled images),"
        f" seeds {spec.seeds}, {spec.jobs} runs of one thread at a time. Final-epoch test"
        " accuracy (%), mean ± std over the seeds; the average is the plugin's model.\n",
        "| recipe | runs | classifier | its average | s / epoch |",
        "| --- | --- | --- | --- | --- |",
    ]
    for group in result.groups:
        runs = [run for run in group.runs if run.finished]
        name = runs[0].summary["name"] if runs else group.label
        plugin = RECIPES.get(name, "")
        own = [100 * run.history[-1]["test_acc"] for run in runs]
        averaged = [100 * run.history[-1][f"{plugin}_test_acc"] for run in runs]
        seconds = [record["seconds"] for run in runs for record in run.history]
        lines.append(
            f"| {name} | {len(runs)} | {mean_std(own)} | {mean_std(averaged)} ({plugin})"
            f" | {mean_std(seconds, 1)} |"
        )
    body = "\n".join(lines)
    print(body, flush=True)
    write_section("teachers_mnist", "VAT with an EMA copy and with Mean Teacher (MNIST-100)", body)


if __name__ == "__main__":
    main()
