"""``sslrun sweep`` and ``sslrun report``: grids of runs and their mean ± std tables.

Attached to the ``sslrun`` application by :func:`register`; the work is done by
:mod:`ssl_core.experiments.sweep` (planning, running) and
:mod:`ssl_core.experiments.report` (tables, plots).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
)
from rich.table import Table
from rich.text import Text

from ssl_core.api.launcher import INTERRUPTED_EXIT
from ssl_core.cli.progress import clock, output_console
from ssl_core.cli.text import printable
from ssl_core.engine.outputs import SUMMARY_NAME, read_run_file
from ssl_core.errors import RecipeError, SslrunError, TrainingError
from ssl_core.experiments.folders import Plan, PlannedRun
from ssl_core.experiments.grid import spec_from_command_line
from ssl_core.experiments.launch import Outcome, SweepWatcher
from ssl_core.experiments.report import (
    Group,
    Row,
    find_run_folders,
    group_folders,
    summarize_group,
    table_cells,
    table_columns,
    write_report,
)
from ssl_core.experiments.report_folder import is_run_folder
from ssl_core.experiments.run_progress import read_progress
from ssl_core.experiments.run_warnings import distinct_warnings
from ssl_core.experiments.sweep import run_sweep

console = output_console()
err_console = output_console(stderr=True)

TargetOption = Annotated[
    float | None,
    typer.Option(
        metavar="FRACTION",
        help="also report the epochs to reach this test accuracy (a fraction: 0.98)",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the ``sweep`` and ``report`` commands to the ``sslrun`` application."""
    app.command()(sweep)
    app.command()(report)


def sweep(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATHS", help="recipe TOML file(s), or one sweep file", show_default=False
        ),
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="key=VALUE fixes a key; key=V1,V2,... sweeps it (repeatable)",
        ),
    ] = None,
    disable: Annotated[
        list[str] | None,
        typer.Option(metavar="PLUGIN", help="switch off the named plugin in every run"),
    ] = None,
    disable_each: Annotated[
        list[str] | None,
        typer.Option(
            metavar="A,B",
            help="a,b: all enabled, then one setting with each of a, b switched off",
        ),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(metavar="SEEDS", help="seeds: 1-5, 1,3,7 or 1-3,9")
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(metavar="N", help="runs at a time (default: 1 locally, the launcher's)"),
    ] = None,
    target: TargetOption = None,
    name: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="sweep folder name (default: the recipe file's name)"),
    ] = None,
    order: Annotated[
        str | None,
        typer.Option(
            metavar="ORDER", help="launch order: 'setting' (default) or 'seed' (first seeds first)"
        ),
    ] = None,
    launcher: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="what starts the runs: local (default), ray, slurm or a plugin's"
        ),
    ] = None,
    launcher_set: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="KEY=VALUE for the launcher (ray: address; slurm: partition ...)",
        ),
    ] = None,
    root: Annotated[Path, typer.Option(metavar="DIR", help="where sweep folders go")] = Path(
        "sweeps"
    ),
    data_dir: Annotated[str | None, typer.Option(metavar="DIR", help="data folder")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress display")] = False,
) -> None:
    """Train a grid of settings × seeds (skipping finished runs) and tabulate mean ± std."""
    spec = spec_from_command_line(
        paths,
        set_ or [],
        disable or [],
        disable_each or [],
        seeds,
        jobs,
        target,
        name,
        order,
        launcher,
        launcher_set or [],
    )
    watcher = SweepWatcher() if quiet else RichSweepWatcher()
    with interrupt_on_sigterm():
        try:
            result = run_sweep(spec, root, data_dir=data_dir, watcher=watcher)
        except KeyboardInterrupt:
            raise SweepInterrupted(
                "sweep interrupted; the runs in progress stopped after a checkpoint;"
                " run the same sweep again to resume"
            ) from None
    print_table(result.rows, spec.target, f"sweep {result.plan.folder.name}")
    print_warnings(result.groups)
    for path in result.written:
        err_console.print(printable(f"wrote {path}"), highlight=False, markup=False, soft_wrap=True)
    if result.elsewhere:
        warn_about(
            f"{len(result.elsewhere)} of {len(result.outcomes)} runs were in use by another"
            f" process (another sweep?), first {result.elsewhere[0].run.folder}; run the sweep"
            " again once it has ended to tabulate them"
        )
    if result.failed:
        first = result.failed[0]
        raise TrainingError(
            f"{len(result.failed)} of {len(result.outcomes)} runs failed; first: {first.run.folder}"
            f" ({first.message}; log {first.run.log})"
        )


def warn_about(text: str) -> None:
    err_console.print(f"warning: {printable(text)}", highlight=False, markup=False, soft_wrap=True)


#: Signals that stop a sweep as Ctrl-C does.
STOPPING = (signal.SIGTERM, signal.SIGHUP)


class SweepInterrupted(SslrunError):
    """Ctrl-C or SIGTERM stopped a sweep (exit 130, like an interrupted run)."""

    exit_code = INTERRUPTED_EXIT


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM and SIGHUP stop a sweep as Ctrl-C does (its children get SIGTERM and checkpoint)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, handle) for signum in STOPPING}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def report(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            metavar="FOLDERS",
            help="run folders, or folders holding them (a sweep)",
            show_default=False,
        ),
    ],
    target: TargetOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="where to write table.md, table.csv and plots (default: the folder"
            " given, or the folders' common parent; nothing for a single run folder)",
        ),
    ] = None,
) -> None:
    """Tabulate run folders, grouping runs whose recipes differ only by seed."""
    if target is not None and not 0 < target <= 1:
        raise RecipeError(f"--target {target}: give a fraction in (0, 1], e.g. 0.98")
    groups = group_folders(find_run_folders(run_dirs), warn_about)
    rows = [summarize_group(group, target) for group in groups]
    print_table(rows, target, "sslrun report")
    print_warnings(groups)
    if out is None:
        out = Path(os.path.commonpath([path.resolve() for path in run_dirs]))
        if is_run_folder(out):  # its accuracy.png is the run's own: write nothing there
            err_console.print(
                printable(f"{out} is a run folder: no table or figure written (give --out DIR)"),
                highlight=False,
                markup=False,
            )
            return
    for path in write_report(groups, rows, out, target):
        err_console.print(printable(f"wrote {path}"), highlight=False, markup=False, soft_wrap=True)


def print_warnings(groups: list[Group]) -> None:
    """Each warning the runs gave, once, with the settings it concerns (after the table)."""
    for text, labels in distinct_warnings(groups):
        warn_about(f"{text} ({', '.join(labels)})")


def print_table(rows: list[Row], target: float | None, title: str) -> None:
    table = Table(title=Text(printable(title)))
    for index, column in enumerate(table_columns(target)):
        left = index == 0 or column == "status"
        justify: Literal["left", "right"] = "left" if left else "right"
        table.add_column(column, justify=justify, overflow="fold", no_wrap=index == 0)
    for row in rows:
        cells = [escape(printable(cell)) for cell in table_cells(row, target)]
        table.add_row(*cells, style=None if row.status == "ok" else "yellow")
    console.print(table)


class RichSweepWatcher(SweepWatcher):
    """A bar over the runs to do, a bar per running run (epochs, ETA), a line per end.

    Running runs are other processes: a thread reads their folders every second
    (:func:`~ssl_core.experiments.run_progress.read_progress`).
    """

    POLL_SECONDS = 1.0

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.labels: dict[Path, str] = {}
        self.waiting: dict[Path, PlannedRun] = {}
        self.run_tasks: dict[Path, TaskID] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.poller: threading.Thread | None = None
        self.started_at = 0.0

    def start(self, plan: Plan, pending: list[PlannedRun]) -> None:
        self.labels = {
            run.folder: printable(f"{plan.labels[run.setting]}, seed {run.seed}")
            for run in plan.runs
        }
        skipped = len(plan.runs) - len(pending)
        spec = plan.spec
        at_once = f"{spec.jobs} at a time" if spec.jobs else "one at a time"
        if spec.launcher != "local":
            at_once = f"through {spec.launcher}" + (f", {at_once}" if spec.jobs else "")
        err_console.print(
            printable(
                f"sweep {plan.folder}: {len(plan.settings)} settings, {len(plan.runs)} runs"
                f" ({skipped} already finished, {len(pending)} to run, {at_once})"
            ),
            highlight=False,
            markup=False,
        )
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[left]}"),
            console=err_console,
        )
        self.progress.start()
        self.task = self.progress.add_task("runs", total=len(pending), left="")
        self.waiting = {run.folder: run for run in pending}
        self.started_at = time.time()
        self.poller = threading.Thread(target=self._poll, name="sweep progress", daemon=True)
        self.poller.start()

    def _poll(self) -> None:
        while not self.stopped.wait(self.POLL_SECONDS):
            self.refresh()

    def refresh(self) -> None:
        """A bar per run that has started: epochs done of its epochs, and its ETA."""
        assert self.progress is not None
        with self.lock:
            for folder, run in list(self.waiting.items()):
                state = read_progress(folder, run.log, self.started_at)
                if state is None:
                    continue
                left = f"ETA {clock(state.seconds_left)}" if state.seconds_left else ""
                if folder not in self.run_tasks:
                    label = escape(self.labels[folder])
                    self.run_tasks[folder] = self.progress.add_task(
                        f"  {label}", total=state.epochs, left=left
                    )
                task = self.run_tasks[folder]
                self.progress.update(task, completed=state.epochs_done, left=left)

    def done(self, outcome: Outcome) -> None:
        assert self.progress is not None and self.task is not None
        with self.lock:
            self.waiting.pop(outcome.run.folder, None)
            task = self.run_tasks.pop(outcome.run.folder, None)
            if task is not None:
                self.progress.remove_task(task)
        label = escape(self.labels[outcome.run.folder])
        if outcome.ok:
            text = f"[green]done[/] {label}: {final_accuracy(outcome.run.folder)}"
            text += f" ({outcome.seconds:.1f} s)"
        elif outcome.elsewhere:
            text = f"[yellow]skipped[/] {label}: in use by another process"
        else:
            detail = escape(printable(f"{outcome.message} (log {outcome.run.log})"))
            text = f"[red]failed[/] {label}: {detail}"
        self.progress.console.print(text, highlight=False)
        self.progress.advance(self.task)

    def finish(self) -> None:
        self.stopped.set()
        if self.poller is not None:
            self.poller.join()
        if self.progress is not None:
            self.progress.stop()


def final_accuracy(folder: Path) -> str:
    """``test acc 98.12%`` from a run folder's summary, which may be damaged or missing."""
    try:
        accuracy = json.loads(read_run_file(folder / SUMMARY_NAME))["final_test_acc"]
        return f"test acc {100 * float(accuracy):.2f}%"
    except (OSError, ValueError, TypeError, KeyError):
        return "finished (no readable summary)"
