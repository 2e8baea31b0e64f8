"""Tables of finished runs: mean ± std per setting, in markdown and CSV.

A *group* is the set of runs of one setting: their resolved recipes differ only by
seed (and by execution details that do not change the method: ``train.threads``,
``data.root``). For each group the table gives the mean ± sample standard deviation
over its finished runs of the final and best test accuracy and of the seconds per
epoch, and, given a target accuracy, the epochs each run needed to reach it (the
quantity of the paper's Figure 3) with how many seeds reached it at all.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_core.engine.checkpoint import numbered_from_one
from ssl_core.engine.outputs import (
    METRICS_NAME,
    RECIPE_NAME,
    SUMMARY_NAME,
    atomic_write_text,
    describe,
    read_run_file,
)
from ssl_core.errors import DataError, RecipeError
from ssl_core.experiments.report_folder import claim_report_folder
from ssl_core.recipe.spec import flatten

#: Recipe keys that never separate two runs into two settings (dotted paths).
IGNORED_KEYS = frozenset({"seed", "train.threads", "data.root"})

TABLE_MD = "table.md"
TABLE_CSV = "table.csv"
ACCURACY_PNG = "accuracy.png"
EPOCHS_PNG = "epochs_to_target.png"
REPORT_FILES = (TABLE_MD, TABLE_CSV, ACCURACY_PNG, EPOCHS_PNG)


@dataclass
class RunRecord:
    """One run folder as read back: its status, per-epoch metrics and summary.

    ``status`` is ``finished`` or ``interrupted`` (from summary.json), ``unfinished``
    (no summary yet) or ``failed`` (set by a sweep whose child process exited non-zero);
    ``detail`` says why a run failed.
    """

    folder: Path
    seed: int | None
    status: str
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    detail: str = ""

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def accuracy_curve(self) -> list[float]:
        return [float(record["test_acc"]) for record in self.history]


@dataclass
class Group:
    """The runs of one setting (one row of the table)."""

    label: str
    runs: list[RunRecord]


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (n − 1 in the denominator; None when n = 1)."""

    mean: float
    std: float | None
    n: int


@dataclass(frozen=True)
class Row:
    label: str
    runs: int
    finished: int
    final_test_acc: Stat | None
    best_test_acc: Stat | None
    seconds_per_epoch: Stat | None
    epochs_to_target: Stat | None
    reached: int
    status: str


# --- reading run folders --------------------------------------------------------------


def read_recipe(folder: Path) -> dict[str, Any]:
    path = folder / RECIPE_NAME
    try:
        return tomllib.loads(read_run_file(path))
    except FileNotFoundError:
        raise RecipeError(f"{folder}: no {RECIPE_NAME} (is this a run folder?)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"{path}: unreadable recipe ({exc})") from None


def read_run(folder: Path) -> RunRecord:
    """Read a run folder's recipe seed, metrics.jsonl and summary.json (if any).

    Epochs are numbered from 1 (an older version's metrics.jsonl counted from 0). What
    a folder holds may be damaged: anything but epoch records with a test accuracy and
    a summary object (with its numbers, if finished) is a :class:`DataError`.
    """
    seed = read_recipe(folder).get("seed")
    history: list[dict[str, Any]] = []
    metrics = folder / METRICS_NAME
    if metrics.exists():
        for number, line in enumerate(_text(metrics).splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{metrics}:{number}: not a JSON object") from None
            if not isinstance(record, dict) or not _is_number(record.get("test_acc")):
                raise DataError(f"{metrics}:{number}: not an epoch record with a test_acc")
            history.append(record)
    summary: dict[str, Any] = {}
    summary_path = folder / SUMMARY_NAME
    if summary_path.exists():
        try:
            summary = json.loads(_text(summary_path))
        except json.JSONDecodeError:
            raise DataError(f"{summary_path}: not a JSON object") from None
        if not isinstance(summary, dict):
            raise DataError(f"{summary_path}: not a JSON object")
    status = str(summary.get("status", "finished")) if summary else "unfinished"
    if status == "finished":
        for key in ("final_test_acc", "best_test_acc", "seconds_per_epoch"):
            if summary and not _is_number(summary.get(key)):
                raise DataError(f"{summary_path}: {key} is not a number")
    seed = seed if isinstance(seed, int) else None
    return RunRecord(folder, seed, status, numbered_from_one(history), summary)


def _text(path: Path) -> str:
    try:
        return read_run_file(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = describe(exc) if isinstance(exc, OSError) else "not UTF-8 text"
        raise DataError(f"{path}: unreadable ({reason})") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def find_run_folders(paths: Sequence[Path]) -> list[Path]:
    """Run folders named directly, or found (by their recipe.toml) below the given folders."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise RecipeError(f"{path}: not a folder")
        if (path / RECIPE_NAME).is_file():
            below = [path]
        else:  # links to folders are not followed: a loop cannot trap the search
            below = sorted(p.parent for p in path.rglob(RECIPE_NAME) if p.is_file())
        if not below:
            raise RecipeError(f"{path}: no run folders (with {RECIPE_NAME}) in it")
        found += [p for p in below if p not in found]
    return found


def group_folders(
    folders: Sequence[Path], warn: Callable[[str], None] | None = None
) -> list[Group]:
    """Group run folders whose resolved recipes differ only by seed; label each group.

    A damaged folder (an unreadable recipe, a metrics line that is not JSON) is left
    out with a one-line warning to ``warn``; the others are still reported. Folders of
    the same setting and seed (a copy of a run folder, or the same run in two sweeps)
    are one run: it is counted once (a finished one first, else the first found), and
    ``warn`` names both folders.
    """
    keys: list[str] = []
    recipes: list[dict[str, Any]] = []
    members: list[list[RunRecord]] = []
    seen: dict[tuple[str, int | None], RunRecord] = {}
    for folder in folders:
        try:
            recipe = setting_of(read_recipe(folder))
            record = read_run(folder)
        except DataError as exc:
            if warn is None:
                raise
            warn(f"{exc}; {folder} left out of the report")
            continue
        key = json.dumps(recipe, sort_keys=True)
        twin = seen.setdefault((key, record.seed), record)
        if twin is not record:
            kept = record if record.finished and not twin.finished else twin
            if warn is not None:
                warn(
                    f"{twin.folder} and {folder}: the same setting and seed {record.seed};"
                    f" counted once ({kept.folder})"
                )
            if kept is record:
                runs = members[keys.index(key)]
                runs[runs.index(twin)] = seen[(key, record.seed)] = record
            continue
        if key not in keys:
            keys.append(key)
            recipes.append(recipe)
            members.append([])
        members[keys.index(key)].append(record)
    labels = label_groups(recipes)
    groups = [Group(label, runs) for label, runs in zip(labels, members, strict=True)]
    return sorted(groups, key=lambda group: natural_key(group.label))


def setting_of(recipe: dict[str, Any]) -> dict[str, Any]:
    """The flattened recipe without the keys that do not define a setting (seed, threads)."""
    return {k: v for k, v in flatten(recipe).items() if k not in IGNORED_KEYS}


_MISSING = object()


def label_groups(settings: Sequence[dict[str, Any]]) -> list[str]:
    """A short label per setting: the recipe name where names differ, then the keys whose
    values differ among settings of the same name (``vat.eps=1.5``, ``no bad_samples``).

    Takes flattened settings (see :func:`setting_of`).
    """
    names = {str(s.get("name")) for s in settings}
    labels = []
    for setting in settings:
        name = str(setting.get("name"))
        peers = [s for s in settings if str(s.get("name")) == name]
        parts = [name] if len(names) > 1 else []
        keys = list(dict.fromkeys(k for s in peers for k in s if k != "name"))
        for key in keys:
            values = [s.get(key, _MISSING) for s in peers]
            if all(v == values[0] for v in values):
                continue
            value = setting.get(key, _MISSING)
            short = key.removeprefix("plugins.")
            if key.startswith("plugins.") and key.endswith(".enabled"):
                if value is False:
                    parts.append(f"no {short.removesuffix('.enabled')}")
                continue
            parts.append(f"{short}={'-' if value is _MISSING else display_value(value)}")
        labels.append(", ".join(parts) or name)
    return labels


def display_value(value: Any) -> str:
    """A value as a user would type it after ``--set key=`` (strings without quotes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(display_value(v) for v in value) + "]"
    return repr(value)


def natural_key(text: str) -> list[Any]:
    """Sort ``eps=2`` before ``eps=10``: digit runs compare as numbers."""
    return [(0, float(p), "") if p[:1].isdigit() else (1, 0.0, p) for p in _NUMBERS.split(text)]


_NUMBERS = re.compile(r"(\d+(?:\.\d+)?)")


# --- statistics -----------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> Stat | None:
    """Mean and sample standard deviation of ``values``; None when there are none."""
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return Stat(mean, std, n)


def epochs_to_target(curve: Sequence[float], target: float) -> int | None:
    """Epochs trained (1-based) when test accuracy first reached ``target``; None if never."""
    for epoch, accuracy in enumerate(curve, 1):
        if accuracy >= target:
            return epoch
    return None


def reached_epochs(group: Group, target: float) -> list[int]:
    """Epochs to ``target`` of each finished run of the group that reached it."""
    hits = [epochs_to_target(run.accuracy_curve, target) for run in group.runs if run.finished]
    return [hit for hit in hits if hit is not None]


def summarize_group(group: Group, target: float | None = None) -> Row:
    """One table row: statistics over the group's finished runs, and their status."""
    done = [run for run in group.runs if run.finished]
    reached = reached_epochs(group, target) if target is not None else []
    counts: dict[str, int] = {}
    for run in group.runs:
        if not run.finished:
            counts[run.status] = counts.get(run.status, 0) + 1
    status = ", ".join(f"{n} {s}" for s, n in counts.items()) or "ok"
    return Row(
        label=group.label,
        runs=len(group.runs),
        finished=len(done),
        final_test_acc=mean_std([float(r.summary["final_test_acc"]) for r in done]),
        best_test_acc=mean_std([float(r.summary["best_test_acc"]) for r in done]),
        seconds_per_epoch=mean_std([float(r.summary["seconds_per_epoch"]) for r in done]),
        epochs_to_target=mean_std([float(e) for e in reached]),
        reached=len(reached),
        status=status,
    )


# --- tables ---------------------------------------------------------------------------


def format_stat(stat: Stat | None, scale: float = 1.0, digits: int = 2) -> str:
    """``98.64 ± 0.12``; the mean alone for a single run; ``-`` for none."""
    if stat is None:
        return "-"
    text = f"{stat.mean * scale:.{digits}f}"
    return text if stat.std is None else f"{text} ± {stat.std * scale:.{digits}f}"


def table_columns(target: float | None) -> list[str]:
    columns = ["setting", "runs", "final acc. %", "best acc. %"]
    if target is not None:
        columns += [f"epochs to {100 * target:g}%", "reached"]
    return [*columns, "s / epoch", "status"]


def table_cells(row: Row, target: float | None) -> list[str]:
    """The row as the strings shown in the markdown table and the terminal."""
    cells = [
        row.label,
        f"{row.finished}/{row.runs}",
        format_stat(row.final_test_acc, 100),
        format_stat(row.best_test_acc, 100),
    ]
    if target is not None:
        cells += [format_stat(row.epochs_to_target, digits=1), f"{row.reached}/{row.finished}"]
    return [*cells, format_stat(row.seconds_per_epoch, digits=3), row.status]


def markdown_table(rows: Sequence[Row], target: float | None = None) -> str:
    columns = table_columns(target)
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = [cell.replace("|", "\\|") for cell in table_cells(row, target)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "setting", "runs", "finished",
    "final_test_acc_mean", "final_test_acc_std", "best_test_acc_mean", "best_test_acc_std",
    "target", "epochs_to_target_mean", "epochs_to_target_std", "reached_target",
    "seconds_per_epoch_mean", "seconds_per_epoch_std", "status",
)  # fmt: skip


def csv_table(rows: Sequence[Row], target: float | None = None) -> str:
    """Every row with raw numbers (accuracies as fractions); empty cells where undefined."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row.label, row.runs, row.finished,
                *_csv_stat(row.final_test_acc), *_csv_stat(row.best_test_acc),
                "" if target is None else target,
                *_csv_stat(row.epochs_to_target), "" if target is None else row.reached,
                *_csv_stat(row.seconds_per_epoch), row.status,
            ]
        )  # fmt: skip
    return buffer.getvalue()


def _csv_stat(stat: Stat | None) -> tuple[Any, Any]:
    if stat is None:
        return "", ""
    return repr(stat.mean), "" if stat.std is None else repr(stat.std)


def write_report(
    groups: Sequence[Group], rows: Sequence[Row], out_dir: Path, target: float | None = None
) -> list[Path]:
    """Write table.md, table.csv and the plots into ``out_dir``; return what was written.

    ``rows`` are the groups' :func:`summarize_group` rows, in the same order. Every file
    is replaced atomically, and only in a folder sslrun may write a report into
    (:mod:`ssl_core.experiments.report_folder`).
    """
    from ssl_core.experiments import plots  # matplotlib is imported only when something is drawn
    from ssl_core.experiments.run_warnings import warnings_markdown

    claim_report_folder(out_dir, REPORT_FILES)
    written = [out_dir / TABLE_MD, out_dir / TABLE_CSV]
    atomic_write_text(written[0], markdown_table(rows, target) + warnings_markdown(groups))
    atomic_write_text(written[1], csv_table(rows, target))
    curves = {
        group.label: [run.accuracy_curve for run in group.runs if run.finished and run.history]
        for group in groups
    }
    title = figure_title(groups, out_dir)
    if any(curves.values()):
        written.append(plots.plot_accuracy(curves, out_dir / ACCURACY_PNG, target, title))
    if target is not None and any(row.finished for row in rows):
        bars = [
            plots.TargetBar(
                group.label,
                reached_epochs(group, target),
                row.finished,
                max((len(run.history) for run in group.runs), default=0),
            )
            for group, row in zip(groups, rows, strict=True)
        ]
        written.append(plots.plot_epochs_to_target(bars, target, out_dir / EPOCHS_PNG, title))
    return written


def figure_title(groups: Sequence[Group], out_dir: Path) -> str:
    """``mnist, sweep fat-eps``: the datasets of the runs and the report's folder."""
    datasets = sorted(
        {
            str(read_recipe(run.folder).get("data", {}).get("name", "?"))
            for group in groups
            for run in group.runs
            if (run.folder / RECIPE_NAME).is_file()
        }
    )
    return f"{', '.join(datasets)}, {out_dir.name}" if datasets else out_dir.name
