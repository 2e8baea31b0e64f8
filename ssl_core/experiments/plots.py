"""PNG figures of runs and sweeps, drawn with matplotlib's Agg canvas (no display needed).

- :func:`plot_accuracy`: test accuracy per epoch, one mean line per setting with its
  min–max band over seeds (the paper's Figures 2 and 3).
- :func:`plot_epochs_to_target`: epochs to reach a target accuracy per setting (Figure 3).
- :func:`save_image_grid` and :func:`save_decision_scatter`: helpers for plugins that
  draw bad or generated samples (Figures 5 and 7) and the 2-D scatter (Figure 6).

Figures are built with :class:`matplotlib.figure.Figure` on a ``FigureCanvasAgg``,
never through pyplot, so drawing holds no global state and needs no display.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator

from ssl_core.engine.outputs import atomic_write_bytes


def _figure(width: float = 7.0, height: float = 4.5) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def fit_title(figure: Figure, title: Text) -> None:
    """Wrap ``title`` onto more lines until it fits the figure's width (never cut off)."""
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    text, columns = title.get_text(), len(title.get_text())
    while title.get_window_extent(renderer).width > 0.96 * figure.bbox.width and columns > 16:
        columns = int(columns * 0.85)
        title.set_text(textwrap.fill(text, columns))


def _save(figure: Figure, path: Path) -> Path:
    """Write the figure as a PNG atomically: a kill mid-write leaves the previous one whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for ax in figure.axes:
        fit_title(figure, ax.title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _array(values: Any) -> np.ndarray:
    """A numpy copy of a tensor (any device, with or without grad) or array-like."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
    return np.asarray(values)


def plot_accuracy(
    curves: Mapping[str, Sequence[Sequence[float]]],
    path: Path,
    target: float | None = None,
    title: str = "",
) -> Path:
    """Test accuracy (%) against epoch: per label, the mean over its runs and the min–max band.

    ``curves`` maps a setting's label to its runs' per-epoch test accuracies (fractions).
    Runs of different lengths are averaged over the runs that reached each epoch.
    ``title`` names what was run (dataset, recipe or sweep); the axes say the rest.
    """
    figure, ax = _figure()
    for label, runs in curves.items():
        runs = [run for run in runs if len(run)]
        if not runs:
            continue
        epochs = max(len(run) for run in runs)
        per_epoch = [[100 * run[e] for run in runs if len(run) > e] for e in range(epochs)]
        x = np.arange(1, epochs + 1)
        mean = np.array([np.mean(values) for values in per_epoch])
        (line,) = ax.plot(
            x,
            mean,
            marker="o" if epochs < 30 else None,
            markersize=3,
            label=f"{label} ({len(runs)} run{'s' if len(runs) > 1 else ''})",
        )
        if len(runs) > 1:
            low = [min(values) for values in per_epoch]
            high = [max(values) for values in per_epoch]
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    if target is not None:
        ax.axhline(
            100 * target,
            color="grey",
            linestyle="--",
            linewidth=1,
            label=f"target {100 * target:g}%",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    longest = max((len(run) for runs in curves.values() for run in runs), default=1)
    ax.set_xlim(0.5, max(longest, 1) + 0.5)  # one epoch is a point, not a broken axis
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    bands = any(len(runs) > 1 for runs in curves.values())
    what = "mean over seeds, band min–max" if bands else "per epoch"
    # The caller's title on its own line: a long recipe name must not push the rest off.
    ax.set_title(f"{title}\ntest accuracy, {what}" if title else f"Test accuracy, {what}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(figure, path)


@dataclass(frozen=True)
class TargetBar:
    """One setting in the epochs-to-target chart: the epochs of the runs that got there."""

    label: str
    epochs: Sequence[int]
    runs: int
    #: Epochs each run trained: "not reached within N epochs" when none got there.
    budget: int = 0


def plot_epochs_to_target(
    bars: Sequence[TargetBar], target: float, path: Path, title: str = ""
) -> Path:
    """Bars of the mean epochs to reach ``target`` (error bar: sample std), ``k/n`` reached.

    A setting no run of which reached the target gets no bar, only the note "not
    reached within N epochs", so that an empty place never reads as "0 epochs".
    """
    figure, ax = _figure(max(5.0, 1.2 * len(bars) + 2), 4.5)
    x = np.arange(len(bars))
    means = [float(np.mean(bar.epochs)) if bar.epochs else 0.0 for bar in bars]
    errors = [float(np.std(bar.epochs, ddof=1)) if len(bar.epochs) > 1 else 0.0 for bar in bars]
    ax.bar(x, means, color="tab:blue", alpha=0.8)
    spread = [error > 0 for error in errors]
    if any(spread):
        ax.errorbar(
            x[spread],
            np.array(means)[spread],
            yerr=np.array(errors)[spread],
            fmt="none",
            ecolor="black",
            capsize=4,
        )
    for position, mean, error, bar in zip(x, means, errors, bars, strict=True):
        note = f"{len(bar.epochs)}/{bar.runs}"
        if not bar.epochs:
            within = f" within {bar.budget} epochs" if bar.budget else ""
            note = f"not reached{within}\n(0/{bar.runs})"
        ax.annotate(
            note,
            (position, mean + error),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize="small",
        )
    tallest = max((mean + error for mean, error in zip(means, errors, strict=True)), default=0)
    ax.set_ylim(0, 1.15 * max(tallest, 1.0))  # room for the notes; no negative axis when empty
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xticks(x, [bar.label for bar in bars], rotation=20, ha="right", fontsize="small")
    ax.set_ylabel(f"epochs to {100 * target:g}% test accuracy")
    heading = f"epochs to {100 * target:g}% (k/n runs reached it)"
    ax.set_title(f"{title}: {heading}" if title else heading[0].upper() + heading[1:])
    ax.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def save_image_triplets(
    clean: Any, perturbed: Any, path: Path, title: str, columns: int = 10
) -> Path:
    """Rows: clean images, their perturbed versions, and the perturbation between them.

    The perturbation (perturbed − clean) is drawn around mid-grey, scaled so that its
    largest pixel is black or white: the direction is visible even where it is faint.
    ``clean`` and ``perturbed``: (N, 1 or 3, H, W) or (N, H, W) in [0, 1].
    """
    a, b = (_array(images).astype(np.float64) for images in (clean, perturbed))
    a, b = (x[:, None] if x.ndim == 3 else x for x in (a, b))
    n = min(columns, len(a))
    difference = b[:n] - a[:n]
    scale = max(float(np.abs(difference).max()), 1e-12)
    rows = [
        ("clean x", np.clip(a[:n], 0, 1)),
        ("bad sample x + C·r/‖r‖", np.clip(b[:n], 0, 1)),
        ("perturbation (grey = 0)", 0.5 + 0.5 * difference / scale),
    ]
    figure = Figure(figsize=(1.1 * n + 1.6, 4.0))
    FigureCanvasAgg(figure)
    axes = figure.subplots(3, n, squeeze=False)
    for row, (label, images) in enumerate(rows):
        for col in range(n):
            ax = axes[row][col]
            image = images[col].transpose(1, 2, 0)
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    fit_title(figure, figure.suptitle(title, fontsize="medium"))
    return _save(figure, path)


def save_image_grid(
    images: Any,
    path: Path,
    nrow: int = 10,
    value_range: tuple[float, float] = (0.0, 1.0),
    title: str = "",
) -> Path:
    """Images (N, C, H, W) with C = 1 or 3, or (N, H, W), as one PNG grid of ``nrow`` columns.

    Values are mapped from ``value_range`` to [0, 1] and clipped (generators ending
    in tanh pass ``(-1, 1)``); cells are separated by a 2-pixel white border. A
    ``title`` goes above the grid, which is then drawn at two screen pixels per pixel.
    """
    array = _array(images).astype(np.float64)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or array.shape[1] not in (1, 3) or len(array) == 0:
        raise ValueError(f"expected images of shape (N, 1 or 3, H, W), got {array.shape}")
    low, high = value_range
    array = np.clip((array - low) / (high - low), 0.0, 1.0).transpose(0, 2, 3, 1)
    n, h, w, c = array.shape
    cols = max(1, min(nrow, n))
    rows = -(-n // cols)
    pad = 2
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c))
    for index, image in enumerate(array):
        top, left = pad + (index // cols) * (h + pad), pad + (index % cols) * (w + pad)
        grid[top : top + h, left : left + w] = image
    path.parent.mkdir(parents=True, exist_ok=True)
    if title:
        return _titled_image(grid, path, title)
    buffer = io.BytesIO()
    if c == 1:
        imsave(buffer, grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0, format="png")
    else:
        imsave(buffer, grid, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _titled_image(image: np.ndarray, path: Path, title: str, band: int = 60) -> Path:
    """``image`` (H, W, 1 or 3) in [0, 1], scaled up twice, under a band with ``title``."""
    height, width = 2 * image.shape[0], max(2 * image.shape[1], 400)
    figure = Figure(figsize=(width / 100, (height + band) / 100))
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0.0, 0.0, 1.0, height / (height + band)))
    shown = image[..., 0] if image.shape[-1] == 1 else image
    ax.imshow(shown, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    fit_title(
        figure, figure.suptitle(title, fontsize="medium", y=1 - 0.15 * band / (height + band))
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def save_decision_scatter(
    model_fn: Callable[[Any], Any],
    x_unlabeled: Any,
    y_pred: Any,
    x_labeled: Any,
    y_labeled: Any,
    extra_points: Mapping[str, Any] | None,
    path: Path,
    title: str = "",
    resolution: int = 200,
) -> Path:
    """2-D data over the model's decision regions (paper Fig. 6).

    ``model_fn`` maps a float32 tensor of points (M, 2) to logits (M, K) or to class
    indices (M,); it is called under ``torch.no_grad()`` (put the model in eval mode
    first). Unlabeled points are coloured by ``y_pred``, labeled ones by ``y_labeled``
    with a black edge; ``extra_points`` maps a legend name (e.g. "bad samples") to an
    (M, 2) set drawn as crosses.
    """
    import torch  # here, so that tables and curves are drawn without loading torch

    unlabeled, labeled = _array(x_unlabeled), _array(x_labeled)
    extras = {name: _array(points) for name, points in (extra_points or {}).items()}
    everything = np.concatenate([unlabeled, labeled, *[p for p in extras.values() if len(p)]])
    low, high = everything.min(0), everything.max(0)
    margin = 0.1 * (high - low) + 1e-6
    low, high = low - margin, high + margin
    xs, ys = np.linspace(low[0], high[0], resolution), np.linspace(low[1], high[1], resolution)
    mesh = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1).reshape(-1, 2)
    with torch.no_grad():
        out = _array(model_fn(torch.as_tensor(mesh, dtype=torch.float32)))
    regions = (out.argmax(1) if out.ndim == 2 else out).reshape(resolution, resolution)
    predicted, classes_l = _array(y_pred), _array(y_labeled)
    classes = int(max(regions.max(), predicted.max(initial=0), classes_l.max(initial=0))) + 1
    cmap = "coolwarm" if classes == 2 else "tab10"
    vmax = max(classes - 1, 1) if classes == 2 else 9

    figure, ax = _figure(6.0, 5.0)
    ax.imshow(
        regions,
        origin="lower",
        extent=(low[0], high[0], low[1], high[1]),
        aspect="auto",
        alpha=0.25,
        interpolation="nearest",
        cmap=cmap,
        vmin=0,
        vmax=vmax,
    )
    ax.scatter(
        unlabeled[:, 0], unlabeled[:, 1], c=predicted, s=6, alpha=0.6, cmap=cmap, vmin=0, vmax=vmax
    )
    ax.scatter(
        labeled[:, 0],
        labeled[:, 1],
        c=classes_l,
        s=80,
        edgecolors="black",
        linewidths=1.5,
        label="labeled",
        cmap=cmap,
        vmin=0,
        vmax=vmax,
    )
    markers = ("orange", "black", "green", "purple")
    for index, (name, points) in enumerate(extras.items()):
        if len(points):
            colour = markers[index % len(markers)]
            ax.scatter(points[:, 0], points[:, 1], c=colour, marker="x", s=18, label=name)
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    if title:
        ax.set_title(title)
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.legend(loc="upper right", fontsize="small")
    return _save(figure, path)
