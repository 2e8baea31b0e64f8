"""What a user sees while training: progress bars, a line per epoch, a summary table.

Progress and logs go to stderr; a run's results (``--quiet``'s JSON summary) to stdout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text
from torch import Tensor

from ssl_core.cli.text import printable
from ssl_core.engine.reporter import Reporter

#: Metrics shown in every epoch line, in this order, when present.
HEADLINE = ("test_acc", "val_acc", "seconds", "lr")


class SmoothedRate:
    """Steps per second, an exponential average over refresh intervals.

    A raw rate from the last few steps swings with every evaluation pause and every
    busy moment of a shared machine, and the ETA with it; the average moves by a
    tenth of each new reading.
    """

    def __init__(self, weight: float = 0.1) -> None:
        self.weight = weight
        self.rate: float | None = None
        self._last: tuple[float, int] | None = None

    def update(self, step: int, now: float) -> None:
        if self._last is not None and step > self._last[1] and now > self._last[0]:
            reading = (step - self._last[1]) / (now - self._last[0])
            self.rate = (
                reading if self.rate is None else self.rate + self.weight * (reading - self.rate)
            )
        self._last = (now, step)

    def pause(self) -> None:
        """Forget the clock (evaluation and checkpointing are not steps)."""
        self._last = None


#: The longest run name shown beside the overall bar (the bars keep the rest of the line).
NAME_WIDTH = 24


class TermsProgress(Progress):
    """Bars, then the loss terms on a line of their own, cut to the terminal's width.

    On the bars' line the terms would leave an 80-column terminal no room for the bars,
    the step counts and the ETA.
    """

    terms = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.terms:
            yield Text(self.terms, no_wrap=True, overflow="ellipsis")


class RichReporter(Reporter):
    """An epoch bar (steps, steps/s, elapsed), an overall bar with a smoothed ETA, the terms."""

    def __init__(
        self,
        console: Console | None = None,
        refresh_every: int = 10,
        results: Console | None = None,
    ) -> None:
        self.console = console or Console(stderr=True)
        self.results = results or output_console()
        self.refresh_every = refresh_every
        self.progress: TermsProgress | None = None
        self.epoch_task: Any = None
        self.run_task: Any = None
        self.iterations = 0
        self.epochs = 0
        self.rate = SmoothedRate()
        self.started = 0.0

    def start(self, name: str, epochs: int, iterations: int, first_epoch: int) -> None:
        self.iterations, self.epochs = iterations, epochs
        self.progress = TermsProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}"),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.started = time.perf_counter()
        self.epoch_task = self.progress.add_task(
            f"epoch {first_epoch + 1}/{epochs}", total=iterations, speed="", terms=""
        )
        self.run_task = self.progress.add_task(
            name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 1] + "…",
            total=epochs * iterations,
            completed=first_epoch * iterations,
            speed="",
            terms="",
        )

    def batch(self, epoch: int, iteration: int, terms: Mapping[str, Tensor]) -> None:
        if self.progress is None:
            return
        if iteration and (iteration + 1) % self.refresh_every:
            return
        step = epoch * self.iterations + iteration + 1
        now = time.perf_counter()
        self.rate.update(step, now)
        rate = self.rate.rate
        elapsed = clock(now - self.started)
        self.progress.update(
            self.epoch_task,
            completed=iteration + 1,
            description=f"epoch {epoch + 1}/{self.epochs}",
            speed=f"{rate:.1f} steps/s, {elapsed}" if rate else elapsed,
            terms=_terms(terms),
        )
        self.progress.terms = self.progress.tasks[0].fields["terms"]
        total = self.epochs * self.iterations
        eta = f"ETA {clock((total - step) / rate)}" if rate else "ETA –"
        self.progress.update(self.run_task, completed=step, speed=eta)

    def epoch(self, metrics: dict[str, Any]) -> None:
        self.rate.pause()
        shown = [f"epoch {metrics['epoch']:>3}"]
        for key in HEADLINE:
            if key in metrics:
                shown.append(f"{key}={_fmt(metrics[key])}")
        shown += [
            f"{k}={_fmt(v)}" for k, v in metrics.items() if k not in HEADLINE and k != "epoch"
        ]
        self.console.print("  ".join(shown), highlight=False)

    def finish(self, summary: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.results.print(summary_table(summary))

    def message(self, text: str) -> None:
        self.console.print(printable(text), highlight=False, markup=False, soft_wrap=True)

    def result(self, text: str) -> None:
        self.results.print(printable(text), highlight=False, markup=False, soft_wrap=True)


def summary_table(summary: dict[str, Any]) -> Table:
    """A run's summary as the table that ends ``sslrun train`` and ``sslrun resume``."""
    table = Table(title=Text(printable(f"sslrun: {summary.get('name', '')}")))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if isinstance(value, (int, float, str)) and key != "name":
            table.add_row(key, Text(printable(_fmt(value))))  # a command line, a path
    return table


def output_console(stderr: bool = False) -> Console:
    """A console that does not wrap at 80 columns when its output is piped or redirected."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 200)


def _terms(terms: Mapping[str, Tensor]) -> str:
    """``name=value`` for each loss term, read from the device in one go."""
    if not terms:
        return ""
    values = torch.stack([v.detach().float().reshape(()) for v in terms.values()]).tolist()
    return " ".join(f"{k}={v:.3f}" for k, v in zip(terms, values, strict=True))


def clock(seconds: float) -> str:
    """``1:02:03``: hours, minutes, seconds."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.1f}"
    return str(value)
