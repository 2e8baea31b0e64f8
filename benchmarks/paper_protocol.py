"""The paper's MNIST protocol: Table 1 and Figure 3 at 50,000 updates, from committed runs.

    python benchmarks/paper_protocol.py run --seeds 1-3 --jobs 2   # hours; resumable
    python benchmarks/paper_protocol.py report                     # docs/results.md section

``run`` trains ``recipes/paper/*.toml`` as one resumable sweep (``sweeps/paper``), every
recipe's first seed before any second seed, ``--jobs`` runs of one thread at a time.
Each run that finishes has its ``recipe.toml``, ``metrics.jsonl`` and ``summary.json``
(kilobytes) copied to ``docs/results/paper/<recipe>/seed-<n>/``, which go into git, so
``report`` rebuilds the tables and figures from committed data on any machine. Stop it
at any time (Ctrl-C or SIGTERM: the runs in progress checkpoint); the same command
continues where it stopped, never redoing a finished run, and so does a fresh clone: a
run already committed is copied back into the sweep folder instead of being trained
again. A committed run is never overwritten.

``run --tuned`` trains ``recipes/paper/<recipe>_tuned.toml`` instead: the protocol with
the settings a study chose on validation data (``benchmarks/mnist20_search.py chosen``),
on seeds 4-6 by default, labeled draws the study never trained on (it used 1-3).

``report`` writes the ``paper_protocol`` section of docs/results.md: Table 1 (final-epoch
test accuracy, mean ± std over seeds, with the batch-norm statistics of the recipe and
with the running ones of the labeled passes; the best epoch on the test set labelled as
such; a "chosen on validation" row under each method that has a tuned recipe), Figure 3
(epochs to 98%, 90% and 80% on MNIST-100) and the accuracy curves.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from mnist20_search import SEEDS as SEARCH_SEEDS
from results_md import write_section

from ssl_core.engine.catalogue import Catalogue
from ssl_core.engine.outputs import METRICS_NAME, RECIPE_NAME, SUMMARY_NAME
from ssl_core.experiments.folders import plan_sweep
from ssl_core.experiments.grid import SweepSpec, parse_seeds, toml_literal
from ssl_core.experiments.launch import Outcome, SweepWatcher
from ssl_core.experiments.plots import plot_accuracy
from ssl_core.experiments.report import (
    RunRecord,
    epochs_to_target,
    format_stat,
    mean_std,
    read_recipe,
    read_run,
)
from ssl_core.experiments.sweep import SweepResult, run_sweep
from ssl_core.recipe.spec import load_recipe, parse_literal, read_toml

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes" / "paper"
RESULTS = REPO / "docs" / "results" / "paper"
FIGURES = REPO / "docs" / "figures"
METHODS = {"fat": "FAT", "vat": "VAT", "badgan": "Bad GAN"}
LABELS = (100, 20)
#: Table 1 of the paper (test accuracy %, MNIST columns).
PAPER_TABLE1 = {
    ("fat", 100): 98.89,
    ("vat", 100): 98.64,
    ("badgan", 100): 99.20,
    ("fat", 20): 96.32,
    ("vat", 20): 67.04,
    ("badgan", 20): 80.16,
}
#: Figure 3 (left): the accuracies whose epochs-to-reach the paper draws for MNIST-100.
FIGURE3_TARGETS = (0.98, 0.90, 0.80)
KEPT_FILES = (RECIPE_NAME, METRICS_NAME, SUMMARY_NAME)
#: Every protocol recipe is named ``paper_<its file stem>``.
RECIPE_NAME_PREFIX = "paper_"
#: The stem's ending of a protocol recipe whose settings a study chose on validation data.
TUNED = "_tuned"
TUNED_SEEDS = "4-6"


def recipe_stem(method: str, labels: int, tuned: bool = False) -> str:
    return f"{method}_mnist{labels}" + (TUNED if tuned else "")


# --- run ------------------------------------------------------------------------------


def parse_set(option: str) -> tuple[str, object]:
    """``key=value`` for every run (a smaller budget to try the script, say)."""
    key, _, value = option.partition("=")
    return key, parse_literal(value)


def is_finished_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run that finished.

    A run that failed early may have left a folder without ``recipe.toml``: no summary
    is checked first, so that such a folder is passed over, not read.
    """
    return (folder / SUMMARY_NAME).is_file() and read_run(folder).finished


def same_file(one: Path, other: Path) -> bool:
    return other.is_file() and filecmp.cmp(one, other, shallow=False)


def keep_run(folder: Path, target_of: Callable[[Path], Path]) -> Path | None:
    """Copy a finished run's small files into ``target_of(folder)``; None if not copied.

    Nothing is copied from an unfinished run, nor over a finished run already kept there:
    committed results may come from another machine, and a rerun of the same seed must
    not silently replace them (its files stay in its sweep folder).
    """
    if not is_finished_run(folder):
        return None
    target = target_of(folder)
    if is_finished_run(target):
        return target if all(same_file(folder / n, target / n) for n in KEPT_FILES) else None
    target.mkdir(parents=True, exist_ok=True)
    for name in KEPT_FILES:
        shutil.copy2(folder / name, target / name)
    return target


def protocol_target(results: Path) -> Callable[[Path], Path]:
    """Where a protocol run is kept: ``results/<recipe file stem>/<seed folder>``.

    The stem comes from the recorded recipe name (``paper_<stem>``), not from the sweep's
    folder, which is named ``base`` when only one recipe is run.
    """

    def target(folder: Path) -> Path:
        name = str(read_recipe(folder)["name"])
        return results / name.removeprefix(RECIPE_NAME_PREFIX) / folder.name

    return target


class KeepFinished(SweepWatcher):
    """Copies every run that finishes into the committed results, and says so."""

    def __init__(self, target_of: Callable[[Path], Path]) -> None:
        self.target_of = target_of

    def done(self, outcome: Outcome) -> None:
        folder = outcome.run.folder
        if kept := keep_run(folder, self.target_of):
            state = f"kept in {kept}"
        elif is_finished_run(folder):
            state = f"finished; not kept, {self.target_of(folder)} already holds this seed's run"
        else:
            state = f"not finished ({outcome.message or 'stopped'})"
        print(f"{folder}: {state}", flush=True)

    def keep_all(self, result: SweepResult) -> None:
        """Also keep the runs that had finished before this invocation."""
        for planned in result.plan.runs:
            if planned.folder.is_dir():
                keep_run(planned.folder, self.target_of)


def restore_committed(spec: SweepSpec, root: Path, results: Path) -> list[Path]:
    """Copy the committed runs of the sweep's seeds back into its run folders, if absent.

    A fresh clone has no sweep folder; with the committed small files back in place the
    sweep counts those runs as finished instead of training them again for hours.
    Only folders that do not exist are written, and only with a committed run of the
    very recipe the sweep would train.
    """
    catalogue = Catalogue.discover()
    plan = plan_sweep(spec, catalogue, root)
    overrides = [f"{key}={toml_literal(value)}" for key, value in spec.fixed.items()]
    restored = []
    for planned in plan.runs:
        recipe = plan.settings[planned.setting].recipe
        committed = results / recipe.stem / planned.folder.name
        if planned.folder.exists() or not is_finished_run(committed):
            continue
        seeded = load_recipe(recipe, catalogue, [*overrides, f"seed={planned.seed}"])
        if seeded.difference(read_toml(committed / RECIPE_NAME)) is not None:
            continue  # committed with other settings: this sweep trains its own run
        planned.folder.mkdir(parents=True)
        for name in KEPT_FILES:
            shutil.copy2(committed / name, planned.folder / name)
        restored.append(planned.folder)
    return restored


def run(args: argparse.Namespace) -> int:
    recipes = [
        RECIPES / f"{recipe_stem(m, n, args.tuned)}.toml" for n in args.labels for m in args.methods
    ]
    if missing := [path for path in recipes if not path.is_file()]:
        where = missing[0].relative_to(REPO) if missing[0].is_relative_to(REPO) else missing[0]
        sys.exit(
            f"error: {where}: no such recipe (a tuned one is written by"
            " benchmarks/mnist20_search.py chosen METHOD)"
        )
    seeds = parse_seeds(args.seeds or (TUNED_SEEDS if args.tuned else "1-3"))
    if args.tuned and (searched := sorted(set(seeds) & set(parse_seeds(SEARCH_SEEDS)))):
        sys.exit(
            f"error: --seeds {args.seeds}: seed {searched[0]} is a labeled draw the study"
            " trained on; score the chosen settings on other draws"
        )
    spec = SweepSpec(
        recipes=recipes,
        name="paper",
        fixed=dict(parse_set(option) for option in args.set),
        seeds=seeds,
        jobs=args.jobs,
        order="seed",
    )
    for folder in restore_committed(spec, args.root, args.results):
        print(f"{folder}: committed in {args.results}; not trained again", flush=True)
    keeper = KeepFinished(protocol_target(args.results))
    result = run_sweep(spec, root=args.root, watcher=keeper)
    keeper.keep_all(result)
    print(f"{len(result.failed)} failed of {len(result.outcomes)} launched", flush=True)
    return 1 if result.failed else 0


# --- report ---------------------------------------------------------------------------


def committed_runs(results: Path, stem: str) -> list[RunRecord]:
    folders = sorted((results / stem).glob("seed-*"), key=lambda p: int(p.name[5:]))
    return [record for record in map(read_run, folders) if record.finished]


def updates(record: RunRecord) -> int:
    train = read_recipe(record.folder)["train"]
    return int(train["epochs"]) * int(train["iterations_per_epoch"])


def percent(values: list[float]) -> str:
    return format_stat(mean_std(values), scale=100) if values else "–"


def table1(results: Path) -> tuple[str, dict[str, list[RunRecord]]]:
    rows = [
        "| labels | method | runs (updates) | final test acc. (%) | running BN stats (%)"
        " | best epoch on test (%) | paper (%) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    found: dict[str, list[RunRecord]] = {}
    for labels in LABELS:
        for method, title in METHODS.items():
            paper = PAPER_TABLE1[method, labels]
            stem = recipe_stem(method, labels)
            found[stem] = committed_runs(results, stem)
            rows.append(table1_row(labels, title, found[stem], paper))
            tuned = recipe_stem(method, labels, tuned=True)
            if (RECIPES / f"{tuned}.toml").is_file() or (results / tuned).is_dir():
                found[tuned] = committed_runs(results, tuned)
                rows.append(table1_row(labels, tuned_title(title), found[tuned], paper))
    return "\n".join(rows), found


def trained_on(found: dict[str, list[RunRecord]]) -> str:
    """Where the tabled runs trained, from their summaries (the machine line above names
    where the tables were compiled, which need not be where the runs trained)."""
    counts = Counter(
        str(run.summary.get("processor") or "processor not recorded")
        for runs in found.values()
        for run in runs
    )
    places = "; ".join(f"{name}: {n}" for name, n in sorted(counts.items()))
    return f"Runs by the processor they trained on (their `summary.json`): {places}."


def tuned_title(title: str) -> str:
    return f"{title}, settings chosen on validation"


def table1_row(labels: int, title: str, runs: list[RunRecord], paper: float) -> str:
    if not runs:
        return f"| {labels} | {title} | 0 | – | – | – | {paper} |"
    final = [r.history[-1]["test_acc"] for r in runs]
    running = [r.history[-1].get("test_acc_labeled_bn") for r in runs]
    running_cell = percent(running) if None not in running else "–"  # no re-estimate
    best = [max(r.accuracy_curve) for r in runs]
    budget = ", ".join(f"{u:,}" for u in sorted({updates(r) for r in runs}))
    return (
        f"| {labels} | {title} | {len(runs)} ({budget}) | {percent(final)}"
        f" | {running_cell} | {percent(best)} | {paper} |"
    )


def figure3(found: dict[str, list[RunRecord]]) -> str:
    rows = [
        "| method | " + " | ".join(f"epochs to {100 * t:g}%" for t in FIGURE3_TARGETS) + " |",
        "| --- |" + " --- |" * len(FIGURE3_TARGETS),
    ]
    for method, title in METHODS.items():
        runs = found.get(recipe_stem(method, 100), [])
        if not runs:
            continue
        cells = []
        for target in FIGURE3_TARGETS:
            reached = [e for r in runs if (e := epochs_to_target(r.accuracy_curve, target))]
            stat = format_stat(mean_std([float(e) for e in reached]), digits=1) if reached else "–"
            cells.append(f"{stat} ({len(reached)}/{len(runs)} reached)")
        rows.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def curves(found: dict[str, list[RunRecord]]) -> list[Path]:
    written = []
    for labels in LABELS:
        series = {
            name: [r.accuracy_curve for r in runs]
            for method, title in METHODS.items()
            for name, runs in (
                (title, found[recipe_stem(method, labels)]),
                (tuned_title(title), found.get(recipe_stem(method, labels, tuned=True), [])),
            )
            if runs
        }
        if series:
            path = FIGURES / f"paper-mnist{labels}-accuracy.png"
            title = f"MNIST-{labels}, recipes/paper (50,000 updates)"
            target = 0.98 if labels == 100 else None
            written.append(plot_accuracy(series, path, target=target, title=title))
    return written


def report(args: argparse.Namespace) -> int:
    table, found = table1(args.results)
    figures = curves(found)
    body = [
        "Recipes `recipes/paper/*.toml` (each cites where its values come from): FAT and VAT"
        " at the Theano VAT protocol (100 epochs of 500 updates, batches of 100 labeled and"
        " 250 unlabeled images, Adam 0.002 × 0.9 per epoch, the VAT journal's network with"
        " noise σ = 0.5, batch-norm statistics re-estimated over 10,000 unlabeled images"
        " before each evaluation), Bad GAN with its official settings at the same 50,000"
        " updates (the official run is 24× longer and reports its best epoch on the test"
        " set). Run data: `docs/results/paper/<recipe>/seed-<n>/`, written by"
        " `python benchmarks/paper_protocol.py run --seeds 1-3 --jobs 2` (one thread per run)."
        ' Rows "settings chosen on validation": `recipes/paper/<recipe>_tuned.toml` (written'
        " by `python benchmarks/mnist20_search.py chosen METHOD`) on labeled draws the search"
        " never used, by `python benchmarks/paper_protocol.py run --tuned --methods fat vat"
        " --labels 20 --jobs 2` (seeds 4–6); where the chosen recipe evaluates with the"
        ' running statistics already, "running BN stats" is empty.'
        " \"final\" is the last epoch's model with the recipe's batch-norm statistics;"
        ' "running BN stats" scores the same weights with the running averages of the'
        ' labeled passes; "best epoch on test" picks the best epoch by its test accuracy'
        " (optimistic; the official Bad GAN figure is of this kind).",
        "",
        trained_on(found),
        "",
        "### Table 1 (MNIST)",
        "",
        table,
        "",
        "### Figure 3 (MNIST-100): epochs to reach each test accuracy",
        "",
        "Mean ± std over the runs that reached it (k/n: how many did), from the same runs.",
        "",
        figure3(found),
        "",
        "### Curves",
        "",
        *[f"![{p.stem}](figures/{p.name})" for p in figures],
    ]
    write_section(
        "paper_protocol", "The paper's protocol: MNIST at 50,000 updates", "\n".join(body)
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("run", help="train the protocol recipes (resumable)")
    train.add_argument("--seeds", help="seeds, e.g. 1-3 or 1,4 (default 1-3; 4-6 --tuned)")
    train.add_argument("--tuned", action="store_true", help="the recipes chosen on validation")
    train.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    train.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    train.add_argument("--labels", nargs="+", type=int, choices=LABELS, default=list(LABELS))
    train.add_argument("--root", type=Path, default=REPO / "sweeps", help="sweep folders")
    train.add_argument("--results", type=Path, default=RESULTS, help="committed run data")
    train.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run")
    summary = sub.add_parser("report", help="write the docs/results.md section")
    summary.add_argument("--results", type=Path, default=RESULTS, help="committed run data")
    args = parser.parse_args(argv)
    return run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    sys.exit(main())
