"""What a user sees while training: a rich progress bar, a line per epoch, a summary table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

#: Metrics shown in every epoch line, in this order, when present.
HEADLINE = ("test_acc", "val_acc", "seconds", "lr")


class Reporter:
    """Silent reporter (tests, non-zero ranks); the base of :class:`RichReporter`."""

    def start(self, name: str, epochs: int, iterations: int, first_epoch: int) -> None: ...

    def batch(self, epoch: int, iteration: int, terms: dict[str, float]) -> None: ...

    def epoch(self, metrics: dict[str, Any]) -> None: ...

    def finish(self, summary: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...


class RichReporter(Reporter):
    """Progress bar over all iterations with the running loss terms, one line per epoch."""

    def __init__(self, console: Console | None = None, refresh_every: int = 10) -> None:
        self.console = console or Console(stderr=True)
        self.refresh_every = refresh_every
        self.progress: Progress | None = None
        self.task: Any = None
        self.iterations = 0

    def start(self, name: str, epochs: int, iterations: int, first_epoch: int) -> None:
        self.iterations = iterations
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[terms]}"),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            name, total=epochs * iterations, completed=first_epoch * iterations, terms=""
        )

    def batch(self, epoch: int, iteration: int, terms: dict[str, float]) -> None:
        if self.progress is None or (iteration + 1) % self.refresh_every:
            return
        text = " ".join(f"{k}={v:.3f}" for k, v in terms.items())
        self.progress.update(
            self.task,
            completed=epoch * self.iterations + iteration + 1,
            description=f"epoch {epoch + 1}",
            terms=text,
        )

    def epoch(self, metrics: dict[str, Any]) -> None:
        shown = [f"epoch {metrics['epoch'] + 1:>3}"]
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
        table = Table(title=f"sslrun: {summary.get('name', '')}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in summary.items():
            if isinstance(value, (int, float, str)) and key != "name":
                table.add_row(key, _fmt(value))
        self.console.print(table)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.1f}"
    return str(value)
