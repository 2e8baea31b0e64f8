"""Figures: accuracy curves, epochs-to-target bars, image grids, the 2-D decision scatter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from ssl_core.experiments.plots import (
    TargetBar,
    plot_accuracy,
    plot_epochs_to_target,
    save_decision_scatter,
    save_image_grid,
    save_image_triplets,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.shape[0] > 50 and image.shape[1] > 50
    assert image[..., :3].std() > 0, "the figure is blank"
    return image


def test_accuracy_plot_is_a_png_with_curves_of_different_lengths(tmp_path):
    curves = {
        "vat": [[0.5, 0.7, 0.8], [0.55, 0.75, 0.82]],
        "fat": [[0.6, 0.9], [0.65, 0.92, 0.95]],
        "empty": [],
    }
    assert_png(plot_accuracy(curves, tmp_path / "accuracy.png", target=0.9))


def test_accuracy_plot_keeps_a_long_title_inside_the_figure(tmp_path):
    """A recipe-length title once ran off both edges of the saved image."""
    curves = {"fat": [[0.6, 0.9], [0.65, 0.92]]}
    title = "MNIST-20, recipes/paper (50,000 updates)"
    image = imread(plot_accuracy(curves, tmp_path / "accuracy.png", title=title))
    edges = image[:, [0, 1, 2, 3, -4, -3, -2, -1], :3]
    assert (edges == 1).all(), "something is drawn at the left or right edge of the figure"


def test_epochs_to_target_chart_handles_settings_that_never_reach_it(tmp_path):
    bars = [TargetBar("vat", [7, 9, 8], 3), TargetBar("fat", [2], 3), TargetBar("none", [], 2)]
    assert_png(plot_epochs_to_target(bars, 0.98, tmp_path / "sub" / "epochs.png"))


def test_image_grid_places_each_image_in_its_cell(tmp_path):
    images = torch.rand(12, 1, 8, 8)
    image = imread(save_image_grid(images, tmp_path / "grid.png", nrow=5))
    # 5 columns, 3 rows of 8x8 cells with a 2-pixel border around each; values pass
    # through an 8-bit colormap lookup, hence the tolerance of 2/255
    assert image.shape[:2] == (3 * 10 + 2, 5 * 10 + 2)
    np.testing.assert_allclose(image[2:10, 2:10, 0], images[0, 0].numpy(), atol=2 / 255)
    # the 7th image is in row 1, column 1
    np.testing.assert_allclose(image[12:20, 12:20, 0], images[6, 0].numpy(), atol=2 / 255)
    assert (image[0, :, 0] == 1).all(), "the border is white"


def test_image_grid_maps_the_value_range_and_takes_colour(tmp_path):
    images = torch.full((2, 3, 4, 4), -1.0)
    images[1] = 1.0
    image = imread(save_image_grid(images, tmp_path / "rgb.png", nrow=2, value_range=(-1, 1)))
    assert image.shape[:2] == (4 + 4, 2 * 6 + 2)
    assert (image[2:6, 2:6, :3] == 0).all() and (image[2:6, 8:12, :3] == 1).all()
    with pytest.raises(ValueError, match="expected images"):
        save_image_grid(torch.rand(2, 5, 4, 4), tmp_path / "bad.png")


def test_decision_scatter_queries_the_model_on_a_mesh_and_writes_a_png(tmp_path):
    seen = []

    def model_fn(points: torch.Tensor) -> torch.Tensor:
        seen.append(points)
        return torch.stack([points[:, 0], -points[:, 0]], dim=1)  # class 0 right of x = 0

    x = torch.randn(50, 2, requires_grad=True)
    path = save_decision_scatter(
        model_fn,
        x,
        (x[:, 0] < 0).long(),
        x[:4],
        torch.tensor([0, 1, 0, 1]),
        {"bad samples": torch.randn(5, 2)},
        tmp_path / "scatter.png",
        resolution=40,
    )
    assert_png(path)
    [mesh] = seen
    assert mesh.shape == (40 * 40, 2) and mesh.dtype == torch.float32
    data = x.detach()
    assert (mesh.min(0).values < data.min(0).values).all()
    assert (mesh.max(0).values > data.max(0).values).all()


def test_no_kept_bad_sample_draws_no_grid_and_does_not_fail(tmp_path):
    from types import SimpleNamespace

    import torch
    from ssl_plugins.methods.visuals import save_bad_sample_figure

    run = SimpleNamespace(data=SimpleNamespace(input_shape=(1, 28, 28)))
    empty = torch.empty(0, 1, 28, 28)
    assert save_bad_sample_figure(run, empty, empty, tmp_path, "nothing kept") is None
    assert not (tmp_path / "bad_samples.png").exists()


def test_the_bad_sample_figure_shows_clean_bad_and_perturbation_rows(tmp_path):
    clean = torch.rand(4, 1, 8, 8)
    bad = (clean + 0.1 * torch.randn(4, 1, 8, 8)).clamp(0, 1)
    path = save_image_triplets(clean, bad, tmp_path / "triplets.png", "mnist, fat: epoch 2")
    assert_png(path)
    image = imread(path)
    assert image.shape[0] == 400  # three rows of images at 4 inches and 100 dpi


def test_an_unreached_target_says_so_instead_of_an_empty_bar(tmp_path):
    bars = [TargetBar("vat", [], 2, budget=20), TargetBar("fat", [16, 19], 2, budget=20)]
    assert_png(plot_epochs_to_target(bars, 0.98, tmp_path / "bars.png", title="mnist, fig3"))


def test_a_one_epoch_curve_has_a_sane_axis(tmp_path):
    assert_png(plot_accuracy({"fat": [[0.8]]}, tmp_path / "one.png", title="mnist, fat"))


def test_a_long_title_is_wrapped_to_stay_inside_the_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ssl_core.experiments.plots import fit_title

    figure = Figure(figsize=(6.0, 5.0))
    FigureCanvasAgg(figure)
    title = figure.add_subplot().set_title("moons, a_long_recipe_name: bad samples " * 3)
    fit_title(figure, title)
    extent = title.get_window_extent(figure.canvas.get_renderer())
    assert "\n" in title.get_text() and 0 <= extent.x0 and extent.x1 <= figure.bbox.width


def test_an_image_grid_with_a_title_shows_it_above_the_images(tmp_path):
    images = torch.ones(4, 1, 8, 8)  # white images: any dark pixel above them is the title
    plain = imread(save_image_grid(images, tmp_path / "plain.png", nrow=2))
    titled = imread(save_image_grid(images, tmp_path / "titled.png", nrow=2, title="generated"))
    band = titled.shape[0] - 2 * plain.shape[0]
    assert band > 0 and titled[:band, ..., :3].min() < 0.5
