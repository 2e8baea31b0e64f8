"""SIGINT, SIGTERM and SIGHUP as requests to stop after the current step."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP ask the loop to stop after the current step.

    SIGHUP (the terminal or SSH session closed) is treated as SIGTERM is: the run
    checkpoints and stops rather than dying with nothing saved.

    The first signal only sets a flag; the loop checkpoints and stops. The same signal
    a second time says so on stderr and falls back to its previous handler (Ctrl-C
    twice aborts at once; the last complete checkpoint stays). A different second
    signal is ignored, because torchrun's agent follows a terminal's SIGINT with a
    SIGTERM to every worker.
    Handlers can only be installed from the main thread; elsewhere signals keep their
    ordinary effect.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        elif signum == self.received:
            name = signal.Signals(signum).name
            os.write(
                2,
                f"{name} again: stopping at once; the last complete checkpoint stays\n".encode(),
            )
            previous = self._previous.get(signum)
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            signal.raise_signal(signum)
