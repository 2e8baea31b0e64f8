"""``sslrun tune``: search a recipe's settings on validation data (``run``) and report.

``sslrun tune RECIPE --space SPACE.toml`` is short for ``sslrun tune run ...``. The work
is done by :mod:`ssl_core.tuning`; this module parses options and shows progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from ssl_core.cli.progress import output_console
from ssl_core.cli.sweep_commands import interrupt_on_sigterm
from ssl_core.engine.catalogue import Catalogue
from ssl_core.errors import TrainingError
from ssl_core.experiments.grid import parse_launcher_set, parse_seeds
from ssl_core.tuning.report import Report, report_folder
from ssl_core.tuning.space import load_space, toml_text
from ssl_core.tuning.trials import TrialEnd, TuneSpec, TuneWatcher, run_study

console = output_console()
err_console = output_console(stderr=True)

tune_app = typer.Typer(
    help="Search a recipe's settings on validation data with Optuna (docs/tuning.md)."
    " `sslrun tune RECIPE --space SPACE.toml` is short for `sslrun tune run ...`.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
#: The subcommands; anything else after ``tune`` is a recipe for ``run``.
SUBCOMMANDS = ("run", "report")


def register(app: typer.Typer) -> None:
    """Add the ``tune`` command group to the ``sslrun`` application."""
    app.add_typer(tune_app, name="tune")


@tune_app.command("run")
def run(
    recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="the base recipe TOML file")],
    space: Annotated[
        Path, typer.Option(metavar="SPACE.toml", help="the search space (docs/tuning.md)")
    ],
    trials: Annotated[
        int, typer.Option(metavar="N", help="trials in the study in all (a rerun continues)")
    ] = 20,
    seeds: Annotated[
        str | None,
        typer.Option(
            metavar="1-3", help="train each trial on these seeds; objective: the mean over them"
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="fix a recipe key in every trial"),
    ] = None,
    disable: Annotated[
        list[str] | None,
        typer.Option(metavar="PLUGIN", help="switch the plugin off in every trial"),
    ] = None,
    jobs: Annotated[
        int | None, typer.Option(metavar="N", help="runs at a time (default: the launcher's)")
    ] = None,
    sampler: Annotated[
        str, typer.Option(metavar="NAME", help="tpe, random, or grid (all choices)")
    ] = "tpe",
    pruner: Annotated[str, typer.Option(help="median, halving, hyperband or none")] = "median",
    pruner_warmup: Annotated[
        int, typer.Option(metavar="EPOCHS", help="epochs before a trial may be pruned")
    ] = 1,
    study_seed: Annotated[int, typer.Option(metavar="N", help="seeds the sampler")] = 0,
    storage: Annotated[
        str | None,
        typer.Option(
            metavar="PATH|URL",
            help="the study's storage: a journal file on a shared file system, or an RDB URL"
            " (default: study.journal in the tune folder)",
        ),
    ] = None,
    study_name: Annotated[
        str | None, typer.Option(metavar="NAME", help="the study's name (default: the folder's)")
    ] = None,
    launcher: Annotated[
        str,
        typer.Option(metavar="NAME", help="what starts the runs: local, ray, slurm or a plugin's"),
    ] = "local",
    launcher_set: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="a launcher key (local: devices, runs_per_device)"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(metavar="DIR", help="the tune folder (default tunes/RECIPE)")
    ] = None,
    data_dir: Annotated[str | None, typer.Option(metavar="DIR", help="data folder")] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="start no new trial after this long; running ones finish (a rerun continues)",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress display")] = False,
) -> None:
    """Run or continue a study: trials of the recipe with values drawn from the space."""
    parameters = load_space(space)
    settings = dict(parse_launcher_set(option) for option in launcher_set or [])
    spec = TuneSpec(
        recipe=recipe,
        space=space,
        parameters=parameters,
        folder=out or Path("tunes") / recipe.stem,
        trials=trials,
        overrides=list(set_ or []),
        disable=list(disable or []),
        seeds=parse_seeds(seeds) if seeds is not None else None,
        jobs=jobs,
        sampler=sampler,
        pruner=pruner,
        pruner_warmup=pruner_warmup,
        study_seed=study_seed,
        storage=storage,
        study_name=study_name,
        launcher=launcher,
        launcher_settings=settings,
        data_dir=data_dir,
        timeout=timeout,
    )
    watcher = TuneWatcher() if quiet else RichTuneWatcher()
    with interrupt_on_sigterm():
        result = run_study(spec, Catalogue.discover(), watcher)
    show_report(result.report)
    if result.ended and len(result.failed) == len(result.ended):
        first = result.failed[0]
        raise TrainingError(f"every trial failed; first: trial {first.number} ({first.message})")


@tune_app.command("report")
def report(
    tune_dir: Annotated[Path, typer.Argument(metavar="TUNE_DIR", help="a tune folder")],
) -> None:
    """Rebuild a study's trials.md, trials.csv, best.toml and figures from its folder."""
    show_report(report_folder(tune_dir))


def show_report(report: Report) -> None:
    """The best trial on stdout; the files written on stderr."""
    for path in report.written:
        err_console.print(f"wrote {path}", highlight=False, markup=False)
    counts = {state: sum(row.state == state for row in report.rows) for state in STATES}
    told = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    best = report.best
    if best is None:
        console.print(f"{len(report.rows)} trials ({told}); none complete yet", highlight=False)
        return
    std = f" ± {100 * best.val_std:.2f}" if best.val_std is not None else ""
    console.print(
        f"{len(report.rows)} trials ({told}); best: trial {best.number}, validation"
        f" {100 * (best.val_mean or 0):.2f}{std}% (test {100 * (best.test_mean or 0):.2f}%,"
        f" not used to choose): {describe_values(best.values)}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


STATES = ("complete", "pruned", "failed", "running")


def describe_values(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={toml_text(value)}" for key, value in values.items())


class RichTuneWatcher(TuneWatcher):
    """A bar over the study's trials, and one line per trial as it ends."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def start(self, spec: TuneSpec, done: int, resumed: int) -> None:
        at_once = f"{spec.jobs} at a time" if spec.jobs else "as many at a time as it runs"
        err_console.print(
            f"study '{spec.name}' in {spec.folder}: {done} of {spec.trials} trials ended,"
            f" {resumed} to resume; runs through {spec.launcher}, {at_once}",
            highlight=False,
            markup=False,
        )
        self.progress = Progress(
            TextColumn("[bold]trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
        )
        self.progress.start()
        self.task = self.progress.add_task("trials", total=spec.trials, completed=done)

    def trial_ended(self, end: TrialEnd) -> None:
        assert self.progress is not None and self.task is not None
        values = escape(describe_values(end.values))
        if end.state == "complete":
            std = f" ± {100 * end.val_std:.2f}" if end.val_std is not None else ""
            text = (
                f"[green]trial {end.number}[/] val {100 * (end.val_mean or 0):.2f}{std}%"
                f" (test {100 * (end.test_mean or 0):.2f}%): {values}"
            )
        elif end.state == "pruned":
            text = f"[yellow]trial {end.number} pruned[/]: {values}"
        else:
            text = f"[red]trial {end.number} failed[/]: {escape(end.message)}"
        self.progress.console.print(text, highlight=False)
        self.progress.advance(self.task)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.stop()
