"""Pictures of what a run learned: image grids (paper Figs. 5, 7) and the 2-D scatter (Fig. 6)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ssl_core.run import Run


def save_image_grid(images: Tensor, path: Path, nrow: int = 10) -> Path:
    """Up to 100 images (N, C, H, W) in [0, 1] as one PNG grid."""
    from torchvision.utils import save_image

    save_image(images[:100].clamp(0, 1).cpu(), path, nrow=nrow, padding=2)
    return path


def save_decision_scatter(run: Run, extra: Tensor, extra_label: str, path: Path) -> Path:
    """2-D data coloured by predicted class over the decision regions, plus ``extra`` points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = run.data
    points = data.unlabeled_x.cpu()
    lo, hi = points.min(0).values - 0.5, points.max(0).values + 0.5
    xs, ys = torch.linspace(lo[0], hi[0], 200), torch.linspace(lo[1], hi[1], 200)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
    model = run.classifier
    was_training = model.training
    model.eval()
    with torch.no_grad():
        regions = model(grid.to(run.device)).argmax(1).cpu().reshape(200, 200)
        predicted = model(points.to(run.device)).argmax(1).cpu()
    model.train(was_training)

    fig, ax = plt.subplots(figsize=(6, 5))
    ax.contourf(xs, ys, regions, alpha=0.15, cmap="coolwarm", levels=data.num_classes - 1 or 1)
    ax.scatter(points[:, 0], points[:, 1], c=predicted, cmap="coolwarm", s=6, alpha=0.6)
    labeled = data.labeled_x.cpu()
    ax.scatter(
        labeled[:, 0], labeled[:, 1], c=data.labeled_y.cpu(), cmap="coolwarm",
        s=80, edgecolors="black", linewidths=1.5, label="labeled",
    )
    if len(extra):
        bad = extra.cpu()
        ax.scatter(bad[:, 0], bad[:, 1], c="orange", marker="x", s=18, label=extra_label)
    ax.set_title(f"{run.recipe.name}: epoch {run.epoch + 1}")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_bad_sample_figure(run: Run, bad: Tensor, out_dir: Path) -> Path:
    """The last batch's kept bad samples: a scatter for 2-D data, an image grid otherwise."""
    if len(run.data.input_shape) == 1 and run.data.input_shape[0] == 2:
        return save_decision_scatter(run, bad, "bad samples", out_dir / "bad_samples.png")
    return save_image_grid(bad, out_dir / "bad_samples.png")
