"""Run artefacts of the built-in plugins, drawn with :mod:`ssl_core.experiments.plots`.

Image grids (paper Figs. 5, 7) for image data; the 2-D scatter over the decision
regions (Fig. 6) for 2-D data.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ssl_core.engine.run import Run
from ssl_core.experiments import plots


def is_2d(run: Run) -> bool:
    return run.data.input_shape == (2,)


def save_image_grid(images: Tensor, path: Path, nrow: int = 10, title: str = "") -> Path:
    """Up to 100 images (N, C, H, W) in [0, 1] as one PNG grid, under ``title``."""
    return plots.save_image_grid(images[:100].detach().cpu(), path, nrow=nrow, title=title)


def save_decision_scatter(
    run: Run, extra: Tensor, extra_label: str, path: Path, title: str = ""
) -> Path:
    """The unlabeled data coloured by prediction over the decision regions, plus ``extra``."""
    model = run.classifier
    was_training = model.training
    model.eval()
    try:

        def classify(points: Tensor) -> Tensor:
            return model(points.to(run.device)).cpu()

        with torch.no_grad():
            predicted = classify(run.data.unlabeled_x).argmax(1)
        return plots.save_decision_scatter(
            classify,
            run.data.unlabeled_x.cpu(),
            predicted,
            run.data.labeled_x.cpu(),
            run.data.labeled_y.cpu(),
            {extra_label: extra.detach().cpu()},
            path,
            title=title or f"{run.recipe.data.name}, {run.recipe.name}: epoch {run.epoch + 1}",
        )
    finally:
        model.train(was_training)


def save_bad_sample_figure(
    run: Run, clean: Tensor, bad: Tensor, out_dir: Path, title: str
) -> Path | None:
    """The last batch's kept bad samples, ``bad_samples.png``.

    For 2-D data, a scatter over the decision regions (paper Fig. 6); for images, three
    rows (paper Figs. 5, 7): the clean images, their bad samples and the perturbation
    between them. With no kept bad sample there are no images to draw (the scatter
    still shows the regions).
    """
    path = out_dir / "bad_samples.png"
    if is_2d(run):
        return save_decision_scatter(run, bad, "bad samples", path, title)
    if len(bad) == 0:
        return None
    return plots.save_image_triplets(clean.detach().cpu(), bad.detach().cpu(), path, title)
