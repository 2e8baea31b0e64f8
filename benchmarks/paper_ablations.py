"""Why MNIST-20 falls short at the paper's protocol: one change at a time, scored on validation.

    python benchmarks/paper_ablations.py run --seeds 1-3    # about 2.5 CPU-hours; resumable
    python benchmarks/paper_ablations.py diagnose --seeds 1-3   # needs the runs' checkpoints
    python benchmarks/paper_ablations.py report             # docs/results.md section

At 20 labels the protocol runs of ``recipes/paper/`` end far below the paper (FAT 63.6%
against 96.32%, VAT 11.35% against 67.04%), and they settle within their first three
epochs while the learning rate is still high. Each setting below is
``recipes/paper/{fat,vat}_mnist20.toml`` with one ``--set`` change, trained for the
protocol's first ``--epochs`` epochs of 500 updates (same learning-rate schedule) with
1,000 training images held out as a validation split (``data.validation``). Settings are
compared on that split, never on the test set; test accuracy is printed beside it only
to show how far the validation ranking carries. Every run scores the classifier with
both batch-norm statistics (re-estimated over unlabeled images, and the running averages
of the labeled passes), so the evaluation-statistics question needs no extra runs.

Like ``paper_protocol.py``, every finished run's ``recipe.toml``, ``metrics.jsonl`` and
``summary.json`` are copied to ``docs/results/paper-ablations/<setting>/seed-<n>/``
and ``report`` reads only those committed files. ``diagnose`` loads a finished run's
checkpoint (in the sweep folder, not committed) and scores its final model on the
validation split three ways: with the running statistics, with statistics re-estimated
over unlabeled images, and with the batch statistics of unlabeled-size batches, i.e. as
every unlabeled pass of training sees it; it writes ``bn_diagnosis.json`` beside the
kept run, which ``report`` tables.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from paper_protocol import RECIPES, REPO, KeepFinished, committed_runs, parse_set, percent
from results_md import write_section
from torch import Tensor, nn

from ssl_core.engine.bn import batch_norms
from ssl_core.engine.build import build_run
from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.evaluation import evaluation_models
from ssl_core.engine.loop import restore_for_evaluation
from ssl_core.engine.outputs import RECIPE_NAME, SUMMARY_NAME
from ssl_core.experiments.grid import SweepSpec, parse_seeds, toml_literal
from ssl_core.experiments.report import RunRecord
from ssl_core.experiments.sweep import run_sweep
from ssl_core.recipe.spec import load_recipe

RESULTS = REPO / "docs" / "results" / "paper-ablations"
VALIDATION = 1000
BAD = "plugins.bad_samples"
#: Written beside a kept run by ``diagnose`` (it needs the run's checkpoint).
DIAGNOSIS_NAME = "bn_diagnosis.json"


@dataclass(frozen=True)
class Setting:
    """One row of the ablation: a protocol recipe and the change made to it."""

    name: str
    recipe: str
    change: dict[str, object]
    says: str


SETTINGS = [
    Setting("vat20", "vat_mnist20", {}, "VAT as in recipes/paper (ε = 5, noise σ = 0.5)"),
    Setting("vat20-eps1.5", "vat_mnist20", {"plugins.vat.eps": 1.5}, "VAT, ε = 1.5 (FAT's)"),
    Setting("vat20-eps0.3", "vat_mnist20", {"plugins.vat.eps": 0.3}, "VAT, ε = 0.3 (VAT 2016)"),
    Setting("vat20-nonoise", "vat_mnist20", {"model.noise": 0.0}, "VAT without hidden noise"),
    Setting(
        "vat20-jointbn",
        "vat_mnist20",
        {"plugins.supervised.batch_norm": "joint"},
        "VAT, labeled batch normalised with the unlabeled one",
    ),
    Setting("fat20", "fat_mnist20", {}, "FAT as in recipes/paper (ε = 1.5, C = 2, α = 0.01)"),
    Setting(
        "fat20-jointbn",
        "fat_mnist20",
        {"plugins.supervised.batch_norm": "joint"},
        "FAT, labeled batch normalised with the unlabeled one",
    ),
    Setting("fat20-eps0.3", "fat_mnist20", {"plugins.vat.eps": 0.3}, "FAT, ε = 0.3"),
    Setting("fat20-nobad", "fat_mnist20", {f"{BAD}.enabled": False}, "FAT without bad samples"),
    Setting("fat20-nonoise", "fat_mnist20", {"model.noise": 0.0}, "FAT without hidden noise"),
]
BY_NAME = {setting.name: setting for setting in SETTINGS}


def change_text(setting: Setting) -> str:
    """The change as it would be typed after ``--set``."""
    if not setting.change:
        return "–"
    return ", ".join(f"`{key}={toml_literal(value)}`" for key, value in setting.change.items())


# --- run ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    failed = 0
    for seed in parse_seeds(args.seeds):  # every setting's first seed before any second
        for setting in (BY_NAME[name] for name in args.settings):
            fixed = {
                "data.validation": VALIDATION,
                "train.epochs": args.epochs,
                "train.threads": 1,
                **dict(parse_set(option) for option in args.set),
                **setting.change,
            }
            spec = SweepSpec(
                recipes=[RECIPES / f"{setting.recipe}.toml"],
                name=f"paper-ablations-{setting.name}",
                fixed=fixed,
                seeds=[seed],
                jobs=1,
            )
            results = args.results / setting.name
            keeper = KeepFinished(lambda folder, results=results: results / folder.name)
            result = run_sweep(spec, root=args.root, watcher=keeper)
            keeper.keep_all(result)
            failed += len(result.failed)
    print(f"{failed} failed", flush=True)
    return 1 if failed else 0


# --- diagnose -------------------------------------------------------------------------


def predictions(
    model: nn.Module, x: Tensor, batch_size: int, batch_stats: bool, beside: Tensor | None = None
) -> Tensor:
    """Predicted classes of ``x``, normalised with running or with batch statistics.

    ``batch_stats`` scores a copy whose batch norms are in training mode (every other
    layer in evaluation mode: no noise), in batches of ``batch_size``: the statistics
    every unlabeled pass of training normalises with. ``beside`` (a labeled batch) joins
    every such batch, as the supervised plugin's joint forward does; its rows are dropped.
    """
    scored = copy.deepcopy(model).eval()
    if batch_stats:
        for bn in batch_norms(scored):
            bn.train()
    with torch.no_grad():
        if beside is None:
            return torch.cat([scored(chunk).argmax(1) for chunk in x.split(batch_size)])
        joint = (scored(torch.cat([beside, chunk]))[len(beside) :] for chunk in x.split(batch_size))
        return torch.cat([logits.argmax(1) for logits in joint])


#: Nearest validation images (pixel space) asked about each labeled image.
NEIGHBOURS = 10


def diagnose(folder: Path) -> dict[str, dict[str, object]]:
    """Under each normalisation: validation accuracy, the most-predicted class's share of
    the validation images, the accuracy on the labeled images themselves (a network that
    fits every labeled image but scores below chance has mapped whole clusters to the
    wrong classes), where each digit goes (the confusion matrix, rows true classes), and
    whether a labeled image's nearest validation images get its label (``neighbours``:
    the share that do; ``neighbours_same_digit``: the share that are its digit;
    ``nearest_distance``: the median distance to the nearest one, in pixel norm like ε)."""
    catalogue = Catalogue.discover()
    run = build_run(load_recipe(folder / RECIPE_NAME, catalogue), catalogue, out_dir=folder)
    restore_for_evaluation(run)
    spec, data = run.recipe.train, run.data
    repeats = -(-spec.labeled_batch // len(data.labeled_x))
    labeled_batch = data.labeled_x.repeat(repeats, *[1] * (data.labeled_x.dim() - 1))
    chosen = {
        "running statistics (labeled passes)": (run.classifier, False, None),
        "re-estimated over unlabeled images": (
            evaluation_models(run.classifier, data, run.recipe)[""],
            False,
            None,
        ),
        "batch statistics of unlabeled-size batches": (run.classifier, True, None),
        "batch statistics beside the labeled batch (the joint pass)": (
            run.classifier,
            True,
            labeled_batch[: spec.labeled_batch],
        ),
    }
    k = int(data.val_y.max()) + 1
    distances = torch.cdist(data.labeled_x.flatten(1), data.val_x.flatten(1))
    closest = distances.topk(NEIGHBOURS, largest=False)
    nearest = closest.indices  # (labeled, NEIGHBOURS)
    reach = float(closest.values[:, 0].median())  # pixel norm, as VAT's ε is measured
    same_digit = (data.val_y[nearest] == data.labeled_y[:, None]).float().mean()
    found: dict[str, dict[str, object]] = {}
    for label, (model, batch_stats, beside) in chosen.items():
        predicted = predictions(model, data.val_x, spec.unlabeled_batch, batch_stats, beside)
        counts = torch.bincount(predicted, minlength=k)
        fitted = predictions(model, data.labeled_x, spec.unlabeled_batch, batch_stats, beside)
        confusion = torch.zeros(k, k, dtype=torch.long)
        confusion.index_put_((data.val_y, predicted), torch.ones_like(predicted), accumulate=True)
        found[label] = {
            "val_acc": float((predicted == data.val_y).float().mean()),
            "top_class_share": float(counts.max()) / len(predicted),
            "labeled_acc": float((fitted == data.labeled_y).float().mean()),
            "confusion": confusion.tolist(),
            "neighbours": float((predicted[nearest] == data.labeled_y[:, None]).float().mean()),
            "neighbours_same_digit": float(same_digit),
            "nearest_distance": reach,
        }
    return found


def diagnose_command(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    for name in args.settings:
        for seed in parse_seeds(args.seeds):
            folder = args.root / f"paper-ablations-{name}" / "base" / f"seed-{seed}"
            kept = args.results / name / folder.name
            if not (kept / SUMMARY_NAME).is_file():
                print(f"{name} seed {seed}: not finished, skipped", flush=True)
                continue
            found = diagnose(folder)
            (kept / DIAGNOSIS_NAME).write_text(json.dumps(found, indent=1) + "\n")
            print(f"{name} seed {seed}: {found}", flush=True)
    return 0


# --- report ---------------------------------------------------------------------------


def final(runs: list[RunRecord], key: str) -> str:
    values = [r.history[-1].get(key) for r in runs]
    return percent([float(v) for v in values]) if None not in values else "–"


def table(results: Path, recipe: str) -> str:
    rows = [
        "| setting | change | runs | val (re-estimated BN) | val (running BN)"
        " | test (re-estimated BN) | test (running BN) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for setting in (s for s in SETTINGS if s.recipe == recipe):
        runs = committed_runs(results, setting.name)
        if not runs:
            rows.append(f"| {setting.says} | {change_text(setting)} | 0 | – | – | – | – |")
            continue
        epochs = sorted({len(r.history) for r in runs})
        cells = [final(runs, k) for k in ("val_acc", "val_acc_labeled_bn")]
        cells += [final(runs, k) for k in ("test_acc", "test_acc_labeled_bn")]
        rows.append(
            f"| {setting.says} | {change_text(setting)}"
            f" | {len(runs)} ({'/'.join(map(str, epochs))} ep.) | " + " | ".join(cells) + " |"
        )
    return "\n".join(rows)


def diagnosis_table(results: Path) -> str:
    """What each diagnosed run predicts on validation under each normalisation."""
    diagnosed = sorted(results.glob(f"*/seed-*/{DIAGNOSIS_NAME}"))
    if not diagnosed:
        return "No run diagnosed yet."
    found = {path: json.loads(path.read_text()) for path in diagnosed}
    labels = list(dict.fromkeys(label for scores in found.values() for label in scores))
    rows = [
        "| setting | seed | " + " | ".join(labels) + " |",
        "| --- | --- |" + " --- |" * len(labels),
    ]
    for path, scores in found.items():
        cells = [
            f"{100 * scores[k]['val_acc']:.2f} ({100 * scores[k]['top_class_share']:.0f}%,"
            f" {100 * scores[k]['labeled_acc']:.0f}%)"
            if k in scores
            else "–"
            for k in labels
        ]
        setting, seed = path.parent.parent.name, path.parent.name.removeprefix("seed-")
        rows.append(f"| {setting} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


#: The normalisation the digit table reads (every one gives the same picture).
RUNNING = "running statistics (labeled passes)"


def digits_table(results: Path) -> str:
    """Where each digit's validation images go, and whether labeled images are islands."""
    rows = [
        "| setting | seed | val % | "
        + " | ".join(f"{d} →" for d in range(10))
        + " | neighbours given the label | neighbours of the same digit | nearest at |",
        "| --- | --- | --- |" + " --- |" * 13,
    ]
    for path in sorted(results.glob(f"*/seed-*/{DIAGNOSIS_NAME}")):
        scores = json.loads(path.read_text()).get(RUNNING, {})
        if "confusion" not in scores:
            continue
        confusion = torch.tensor(scores["confusion"], dtype=torch.float64)
        goes = [
            f"{int(row.argmax())} ({100 * float(row.max() / row.sum()):.0f}%)" for row in confusion
        ]
        setting, seed = path.parent.parent.name, path.parent.name.removeprefix("seed-")
        near, same = scores["neighbours"], scores["neighbours_same_digit"]
        cells = [
            f"{100 * scores['val_acc']:.1f}",
            *goes,
            f"{100 * near:.0f}%",
            f"{100 * same:.0f}%",
            f"{scores['nearest_distance']:.1f}" if "nearest_distance" in scores else "–",
        ]
        rows.append(f"| {setting} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(rows) if len(rows) > 2 else "No run diagnosed with its confusion matrix yet."


def seed_text(results: Path) -> str:
    """The committed seeds as ``--seeds`` takes them: ``1-3`` when consecutive."""
    seeds = sorted({int(path.name.removeprefix("seed-")) for path in results.glob("*/seed-*")})
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    return ",".join(map(str, seeds))


def report(args: argparse.Namespace) -> int:
    seeds = seed_text(args.results)
    body = [
        "Each setting is a `recipes/paper/` MNIST-20 recipe with one change, trained for the"
        " protocol's first epochs (500 updates each, the protocol's learning-rate schedule),"
        f" with {VALIDATION:,} training images held out (`data.validation`), by"
        f" `python benchmarks/paper_ablations.py run --seeds {seeds}` (one thread per run, beside"
        " one other run); final-epoch accuracy, mean ± std over seeds. Compare settings by"
        ' the validation columns; the test columns are shown, not used to choose. "running'
        ' BN" is the running statistics of the supervised passes (with'
        ' `batch_norm="joint"`, of the joint labeled and unlabeled batches). Run data:'
        " `docs/results/paper-ablations/<setting>/seed-<n>/`.",
        "",
        "### VAT, MNIST-20",
        "",
        table(args.results, "vat_mnist20"),
        "",
        "### FAT, MNIST-20",
        "",
        table(args.results, "fat_mnist20"),
        "",
        "### What the networks predict under each batch-norm normalisation",
        "",
        "Validation accuracy (%) of the final model; in brackets the share of validation"
        " images given the most-predicted class, and the accuracy on the 20 labeled"
        " images themselves. Written by `python benchmarks/paper_ablations.py diagnose"
        f" --seeds {seeds}` from the runs' checkpoints.",
        "",
        diagnosis_table(args.results),
        "",
        "### Where each digit goes: clusters with the wrong label",
        "",
        "For runs diagnosed with their confusion matrix: the class most validation images of"
        " each digit get (and its share), with the running statistics; then, over the"
        f" {NEIGHBOURS} validation images nearest (in pixels) to each labeled image, the"
        " share given that labeled image's label, the share that are its digit, and the"
        " median distance to the nearest one (pixel norm, as ε and C are measured)."
        " `fat20-jointbn-rerun` is fat20-jointbn's seed 2 trained again on another CPU"
        " (its committed run's checkpoint was not kept).",
        "",
        digits_table(args.results),
    ]
    write_section(
        "paper_ablations", "MNIST-20 at the protocol: one change at a time", "\n".join(body)
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("run", help="train the settings (resumable)")
    train.add_argument("--seeds", default="1-3", help="seeds, e.g. 1-3 or 1,4")
    train.add_argument("--epochs", type=int, default=6, help="epochs of 500 updates")
    train.add_argument("--settings", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    train.add_argument("--root", type=Path, default=REPO / "sweeps", help="sweep folders")
    train.add_argument("--results", type=Path, default=RESULTS, help="committed run data")
    train.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run")
    check = sub.add_parser("diagnose", help="score finished runs under each normalisation")
    check.add_argument("--seeds", default="1-3", help="seeds, e.g. 1-3 or 1,4")
    check.add_argument("--settings", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    check.add_argument("--root", type=Path, default=REPO / "sweeps", help="sweep folders")
    check.add_argument("--results", type=Path, default=RESULTS, help="committed run data")
    summary = sub.add_parser("report", help="write the docs/results.md section")
    summary.add_argument("--results", type=Path, default=RESULTS, help="committed run data")
    args = parser.parse_args(argv)
    commands = {"run": run, "diagnose": diagnose_command, "report": report}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
