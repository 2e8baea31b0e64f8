"""What a study leaves for a person: the trial table, ``best.toml`` and three figures.

- ``trials.csv`` (one row per trial, by number) and ``trials.md`` (best first);
- ``best.toml``: the base recipe with the best trial's values, headed by how they were
  chosen (study, trials, objective, seeds), ready for ``sslrun``;
- ``history.png`` (each trial's objective and the best so far), ``importances.png``
  (Optuna's PED-ANOVA importance of each parameter for the objective) and
  ``parameters.png`` (the objective against each parameter's value).

Everything is rebuilt from the study's storage and ``tune.toml``, so ``sslrun tune
report DIR`` redraws a study's report at any time, including while it runs.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from ssl_core.engine.outputs import atomic_write_bytes, atomic_write_text
from ssl_core.recipe.spec import dump_toml
from ssl_core.tuning.folder import MANIFEST_NAME, read_manifest
from ssl_core.tuning.space import Parameter, parse_parameter, put, toml_text
from ssl_core.tuning.study import RESULT_ATTR, is_url, load_study, open_storage

TRIALS_CSV = "trials.csv"
TRIALS_MD = "trials.md"
BEST_TOML = "best.toml"
HISTORY_PNG = "history.png"
IMPORTANCES_PNG = "importances.png"
PARAMETERS_PNG = "parameters.png"
STATE_NAMES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


@dataclass(frozen=True)
class TrialRow:
    """One trial as the report shows it."""

    number: int
    state: str
    values: dict[str, Any]
    val_mean: float | None
    val_std: float | None
    test_mean: float | None
    epochs: list[int]
    error: str


def trial_rows(trials: Sequence[FrozenTrial], parameters: Sequence[Parameter]) -> list[TrialRow]:
    rows = []
    for trial in trials:
        result = trial.user_attrs.get(RESULT_ATTR, {})
        runs = result.get("runs", {})
        val_mean = result.get("val_mean")
        if val_mean is None and trial.intermediate_values:  # a pruned trial's last mean
            val_mean = trial.intermediate_values[max(trial.intermediate_values)]
        values = {
            p.key: p.value_of(trial.params[p.key]) for p in parameters if p.key in trial.params
        }
        rows.append(
            TrialRow(
                number=trial.number,
                state=STATE_NAMES.get(trial.state, trial.state.name.lower()),
                values=values,
                val_mean=val_mean,
                val_std=result.get("val_std"),
                test_mean=result.get("test_mean"),
                epochs=[int(run["epochs"]) for run in runs.values() if run.get("epochs")],
                error=str(result.get("error") or ""),
            )
        )
    return rows


def best_row(rows: Sequence[TrialRow]) -> TrialRow | None:
    complete = [row for row in rows if row.state == "complete" and row.val_mean is not None]
    return max(complete, key=lambda row: (row.val_mean, -row.number)) if complete else None


def percent(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "–"
    text = f"{100 * value:.2f}"
    return f"{text} ± {100 * std:.2f}" if std is not None else text


def shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else toml_text(value)


# --- tables ---------------------------------------------------------------------------


def csv_text(rows: Sequence[TrialRow], parameters: Sequence[Parameter]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = [p.key for p in parameters]
    writer.writerow(
        ["trial", "state", *keys, "val_mean", "val_std", "test_mean", "epochs", "error"]
    )
    for row in sorted(rows, key=lambda r: r.number):
        writer.writerow(
            [
                row.number,
                row.state,
                *(toml_text(row.values[k]) if k in row.values else "" for k in keys),
                "" if row.val_mean is None else row.val_mean,
                "" if row.val_std is None else row.val_std,
                "" if row.test_mean is None else row.test_mean,
                " ".join(str(e) for e in row.epochs),
                row.error,
            ]
        )
    return buffer.getvalue()


def markdown_text(
    rows: Sequence[TrialRow], parameters: Sequence[Parameter], manifest: dict[str, Any]
) -> str:
    """The trials, best first: complete ones by objective, then pruned, failed, running."""
    study = manifest["study"]
    counts = {state: sum(row.state == state for row in rows) for state in STATE_NAMES.values()}
    told = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    lines = [
        f"# Study `{study['name']}`",
        "",
        f"{len(rows)} trials ({told}). Objective: {study['objective']}, seeds"
        f" {', '.join(map(str, study['seeds']))}; sampler {study['sampler']}, pruner"
        f" {study['pruner']}. Test accuracy is recorded, never used to choose.",
        "",
    ]
    keys = [p.key for p in parameters]
    header = ["trial", "state", *keys, "val % (mean ± std)", "test %", "epochs", "note"]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    order = {"complete": 0, "pruned": 1, "failed": 2, "running": 3, "waiting": 4}
    ranked = sorted(
        rows, key=lambda r: (order.get(r.state, 5), -(r.val_mean or -math.inf), r.number)
    )
    for row in ranked:
        cells = [
            str(row.number),
            row.state,
            *(shown(row.values[k]) if k in row.values else "–" for k in keys),
            percent(row.val_mean, row.val_std),
            percent(row.test_mean),
            " ".join(str(e) for e in row.epochs) or "–",
            row.error.replace("|", "\\|")[:160],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def best_recipe(best: TrialRow, rows: Sequence[TrialRow], manifest: dict[str, Any]) -> str:
    """The base recipe with the best trial's values, headed by how they were chosen."""
    study = manifest["study"]
    recipe = copy.deepcopy(manifest["base"])
    for key, value in best.values.items():
        put(recipe, key, value)
    states = {state: sum(row.state == state for row in rows) for state in ("complete", "pruned")}
    validation = recipe.get("data", {}).get("validation")
    header = [
        "# Chosen by `sslrun tune` on validation data, never on test.",
        f"# Study '{study['name']}' ({study['storage']}): {len(rows)} trials"
        f" ({states['complete']} complete, {states['pruned']} pruned), sampler"
        f" {study['sampler']}, pruner {study['pruner']}.",
        f"# Objective: {study['objective']} (data.validation = {validation}),"
        f" seeds {', '.join(map(str, study['seeds']))}.",
        f"# Best: trial {best.number}, validation {percent(best.val_mean, best.val_std)}%"
        f" (test {percent(best.test_mean)}%, recorded, not used to choose).",
        "# Values chosen:",
        *(f"#   {key} = {toml_text(value)}" for key, value in best.values.items()),
        "# Every other key is as the trials trained (the fixed --set of the study included).",
        "",
    ]
    return "\n".join(header) + dump_toml(recipe)


# --- figures --------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure, path: Path) -> Path:
    """Draw to memory, then replace the file atomically (a kill never leaves half a PNG)."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_history(rows: Sequence[TrialRow], name: str, path: Path) -> Path:
    figure = _figure(7.0, 4.5)
    ax = figure.add_subplot()
    done = sorted(
        (r for r in rows if r.state == "complete" and r.val_mean is not None),
        key=lambda r: r.number,
    )
    pruned = [r for r in rows if r.state == "pruned" and r.val_mean is not None]
    if done:
        ax.plot(
            [r.number for r in done],
            [100 * (r.val_mean or 0) for r in done],
            "o",
            label="complete trial",
        )
        best = np.maximum.accumulate([100 * (r.val_mean or 0) for r in done])
        ax.step([r.number for r in done], best, where="post", label="best so far")
    if pruned:
        ax.plot(
            [r.number for r in pruned],
            [100 * (r.val_mean or 0) for r in pruned],
            "x",
            color="grey",
            label="pruned (last mean)",
        )
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy, mean over seeds (%)")
    ax.set_title(f"study {name}: optimization history", fontsize=10)
    if done or pruned:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(figure, path)


def plot_importances(importances: dict[str, float], name: str, path: Path) -> Path:
    figure = _figure(7.0, 1.2 + 0.45 * len(importances))
    ax = figure.add_subplot()
    keys = list(importances)[::-1]
    ax.barh(keys, [importances[k] for k in keys])
    ax.set_xlabel("importance for the objective (PED-ANOVA, sums to 1)")
    ax.set_title(f"study {name}: parameter importances", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _png(figure, path)


def plot_parameters(
    rows: Sequence[TrialRow], parameters: Sequence[Parameter], name: str, path: Path
) -> Path:
    columns = min(3, len(parameters))
    lines = math.ceil(len(parameters) / columns)
    figure = _figure(4.0 * columns, 3.2 * lines)
    done = [r for r in rows if r.state == "complete" and r.val_mean is not None]
    for index, parameter in enumerate(parameters):
        ax = figure.add_subplot(lines, columns, index + 1)
        have = [r for r in done if parameter.key in r.values]
        ys = [100 * (r.val_mean or 0) for r in have]
        xs: list[float]
        if parameter.choices:
            labels = [shown(choice) for choice in parameter.choices]
            xs = [float(labels.index(shown(r.values[parameter.key]))) for r in have]
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
        else:
            xs = [float(r.values[parameter.key]) for r in have]
            if parameter.log:
                ax.set_xscale("log")
        ax.plot(xs, ys, "o", alpha=0.7)
        ax.set_xlabel(parameter.key, fontsize=8)
        ax.set_ylabel("val. acc. (%)", fontsize=8)
        ax.grid(alpha=0.3)
    figure.suptitle(f"study {name}: validation accuracy against each parameter", fontsize=10)
    return _png(figure, path)


# --- the whole report -----------------------------------------------------------------


def manifest_parameters(folder: Path, manifest: dict[str, Any]) -> list[Parameter]:
    space = manifest.get("space", {})
    return [parse_parameter(folder / MANIFEST_NAME, key, table) for key, table in space.items()]


@dataclass(frozen=True)
class Report:
    """A study's report: its trials, the best complete one, the files written."""

    rows: list[TrialRow]
    best: TrialRow | None
    written: list[Path]


def write_report(
    folder: Path,
    study: optuna.Study,
    parameters: Sequence[Parameter],
) -> Report:
    """Write the tables, ``best.toml`` (once a trial is complete) and the figures."""
    manifest = read_manifest(folder)
    name = manifest["study"]["name"]
    rows = trial_rows(study.get_trials(deepcopy=False), parameters)
    written = []
    for file, text in (
        (TRIALS_CSV, csv_text(rows, parameters)),
        (TRIALS_MD, markdown_text(rows, parameters, manifest)),
    ):
        atomic_write_text(folder / file, text)
        written.append(folder / file)
    best = best_row(rows)
    if best is not None:
        atomic_write_text(folder / BEST_TOML, best_recipe(best, rows, manifest))
        written.append(folder / BEST_TOML)
    written.append(plot_history(rows, name, folder / HISTORY_PNG))
    complete = [row for row in rows if row.state == "complete"]
    if len(complete) >= 2 and any(
        len({shown(r.values.get(p.key)) for r in complete}) > 1 for p in parameters
    ):
        importances = parameter_importances(study)
        written.append(plot_importances(importances, name, folder / IMPORTANCES_PNG))
    if complete:
        written.append(plot_parameters(rows, parameters, name, folder / PARAMETERS_PNG))
    return Report(rows, best, written)


def parameter_importances(study: optuna.Study) -> dict[str, float]:
    """Each parameter's share in the objective's variation (PED-ANOVA; they sum to 1).

    Named rather than left to Optuna's default, which has changed between releases. With
    few trials every parameter gets an equal share, which the figure shows as it is; the
    library's warning saying so would only be noise in the command's output.
    """
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Target and region quantiles", UserWarning)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))


def storage_location(folder: Path, recorded: str) -> str:
    """A recorded storage: a URL, an absolute journal path, or a journal in the folder."""
    if is_url(recorded) or Path(recorded).is_absolute():
        return recorded
    return str(folder / recorded)


def report_folder(folder: Path) -> Report:
    """``sslrun tune report DIR``: rebuild a study's report from its folder."""
    manifest = read_manifest(folder)
    parameters = manifest_parameters(folder, manifest)
    storage = open_storage(storage_location(folder, manifest["study"]["storage"]))
    study = load_study(storage, manifest["study"]["name"])
    return write_report(folder, study, parameters)
