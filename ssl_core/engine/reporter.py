"""What the loop tells whoever watches it: the silent base of every progress display."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor


class Reporter:
    """Silent reporter (tests, non-zero ranks); the base of :class:`RichReporter`."""

    def start(self, name: str, epochs: int, iterations: int, first_epoch: int) -> None: ...

    def batch(self, epoch: int, iteration: int, terms: Mapping[str, Tensor]) -> None: ...

    def epoch(self, metrics: dict[str, Any]) -> None: ...

    def finish(self, summary: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...

    def result(self, text: str) -> None: ...
