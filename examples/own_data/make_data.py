"""Write a small image set of your own as a .npz file: the format sslrun's `npz` dataset reads.

Four classes of 12x12 grayscale pictures, each a noisy stroke drawn at a random place:
0 horizontal bar, 1 vertical bar, 2 diagonal, 3 anti-diagonal. The arrays are saved as
``x`` (N, 12, 12) uint8 and ``y`` (N,) int64 — exactly what you would save for your own
images. Usage (from the repository root):

    python examples/own_data/make_data.py                  # writes examples/own_data/strokes.npz
    sslrun examples/own_data/recipe.toml                   # trains VAT on it
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SIZE = 12
CLASSES = ("horizontal", "vertical", "rising diagonal", "falling diagonal")


def stroke(label: int, rng: np.random.Generator) -> np.ndarray:
    """One picture: a soft stroke through a random point near the centre, plus pixel noise.

    The stroke is drawn with a Gaussian pen (width about 1 pixel), so shifting it a
    little changes the picture a little: each class forms one connected, smooth set,
    the setting in which unlabeled data helps (paper §2.1, VAT's smoothness).
    """
    angle = (0.0, 90.0, 45.0, 135.0)[label] + rng.normal(0.0, 8.0)
    centre = (SIZE - 1) / 2 + rng.uniform(-2.5, 2.5, size=2)
    half = rng.uniform(3.0, 5.0)
    direction = np.array([-np.sin(np.radians(angle)), np.cos(np.radians(angle))])
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    offsets = np.stack([rows - centre[0], cols - centre[1]], axis=-1)
    along = np.clip(offsets @ direction, -half, half)
    distance = np.linalg.norm(offsets - along[..., None] * direction, axis=-1)
    image = np.exp(-0.5 * (distance / 0.8) ** 2)
    image += rng.normal(0.0, 0.1, size=image.shape)
    return np.clip(image, 0.0, 1.0)


def make(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    rng.shuffle(y)
    x = np.stack([stroke(int(label), rng) for label in y])
    return (x * 255).round().astype(np.uint8), y.astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("strokes.npz"))
    parser.add_argument("--n", type=int, default=4000, help="number of pictures")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    x, y = make(args.n, args.seed)
    np.savez_compressed(args.out, x=x, y=y)
    print(f"wrote {args.out}: x {x.shape} {x.dtype}, y {y.shape}, classes {', '.join(CLASSES)}")


if __name__ == "__main__":
    main()
