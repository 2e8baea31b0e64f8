"""The warnings a report's runs gave, each once, with the settings whose runs gave it.

Every run keeps its warnings in ``summary.json`` (a budget that keeps λ at 0, a probe
that rounds away); a sweep of five seeds would repeat each five times, and a table
without them shows two identical rows with no word of why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Run(Protocol):
    """A run as a report reads it back (:class:`~ssl_core.experiments.report.RunRecord`)."""

    @property
    def summary(self) -> dict[str, Any]: ...


class Group(Protocol):
    """A report's setting and its runs (:class:`~ssl_core.experiments.report.Group`)."""

    @property
    def label(self) -> str: ...

    @property
    def runs(self) -> Sequence[Run]: ...


def distinct_warnings(groups: Sequence[Group]) -> list[tuple[str, list[str]]]:
    """Each warning once, in the order first seen, with the labels of its settings."""
    found: dict[str, list[str]] = {}
    for group in groups:
        for run in group.runs:
            warnings = run.summary.get("warnings", [])
            for text in warnings if isinstance(warnings, list) else []:
                labels = found.setdefault(str(text), [])
                if group.label not in labels:
                    labels.append(group.label)
    return list(found.items())


def warnings_markdown(groups: Sequence[Group]) -> str:
    """A list under the table (nothing when no run warned)."""
    found = distinct_warnings(groups)
    if not found:
        return ""
    lines = [f"- {text} ({', '.join(labels)})" for text, labels in found]
    return "\nWarnings of the runs (each once, with its settings):\n\n" + "\n".join(lines) + "\n"
