"""TensorBoard logging: loss terms per step, every epoch metric, the run's pictures.

Enable it with a ``[plugins.tensorboard]`` table (``pip install 'sslrun[tensorboard]'``
installs TensorBoard); event files go to ``RUN_DIR/tensorboard``, so

    tensorboard --logdir runs/

shows every run. Every ``every`` steps each loss term of the step is logged under
``step/<term>`` (reading the values is the only host synchronisation the plugin adds,
once per ``every`` steps); after each epoch every numeric metric under ``epoch/<name>``
(test accuracy, the learning rate, λ, kept bad samples ..., the epoch itself); at the
end of the run the PNG pictures other plugins wrote into the run folder (bad samples,
generated images). Only rank 0 writes; a run without a folder writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from ssl_core import BatchContext, Plugin, PluginSettings, Run, hookimpl


class TensorBoardSettings(PluginSettings):
    every: int = Field(10, gt=0, description="log the step's loss terms every N steps")


class TensorBoard(Plugin):
    """Writes the run's numbers and pictures as TensorBoard event files.

    Every value is logged at the number of steps done, so all curves share one axis.
    The writer opens at the first step, when that number is known: a resumed run
    purges the events written after its checkpoint, so no step shows twice.
    """

    name: ClassVar[str] = "tensorboard"
    order: ClassVar[int] = 1000  # last: it sees every plugin's terms, extras and pictures
    Settings: ClassVar[type[PluginSettings]] = TensorBoardSettings
    #: torch's SummaryWriter needs TensorBoard; a recipe without it is refused up front.
    requires: ClassVar[dict[str, str]] = {"tensorboard": "pip install 'sslrun[tensorboard]'"}

    folder: Path | None = None
    writer: Any = None
    steps_done: int = 0

    @property
    def s(self) -> TensorBoardSettings:
        return self.settings  # type: ignore[return-value]

    @hookimpl
    def sslrun_setup(self, run: Run) -> None:
        if run.out_dir is None or not run.world.is_main:
            return
        self.folder = Path(run.out_dir) / "tensorboard"

    @hookimpl
    def sslrun_after_step(self, batch: BatchContext) -> None:
        if self.folder is None:
            return
        self.steps_done = batch.global_step + 1
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.folder), purge_step=self.steps_done)
        if self.steps_done % self.s.every:
            return
        names = list(batch.terms)
        values = torch.stack([batch.terms[n].detach().float().reshape(()) for n in names])
        for name, value in zip(names, values.tolist(), strict=True):
            self.writer.add_scalar(f"step/{name}", value, self.steps_done)

    @hookimpl
    def sslrun_epoch_end(self, metrics: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"epoch/{name}", value, self.steps_done)
        self.writer.flush()

    @hookimpl
    def sslrun_run_end(self, run: Run) -> None:
        if self.writer is None:
            return
        from matplotlib.image import imread

        assert run.out_dir is not None
        for picture in sorted(Path(run.out_dir).glob("*.png")):
            image = imread(picture)[..., :3]
            self.writer.add_image(picture.stem, image, self.steps_done, dataformats="HWC")
        self.writer.close()
        self.writer = None


@hookimpl
def sslrun_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(TensorBoard)
