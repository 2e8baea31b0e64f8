"""A file name that does not exist, and the one nearby that the user probably meant."""

from __future__ import annotations

import difflib
from pathlib import Path


def did_you_mean(path: Path) -> str:
    """`` (did you mean 'recipes/fat_mnist.toml'?)`` when a file of a close name exists."""
    guess = nearest_file(path)
    return f" (did you mean '{guess}'?)" if guess is not None else ""


def nearest_file(path: Path) -> Path | None:
    """The existing file whose path is closest to ``path``, one folder level at a time.

    Each missing part of the path is replaced by the closest name in its folder
    (folders for the folders, files for the last part); ``None`` when a part has no
    close name. A missing ``.toml`` suffix counts as a small difference.
    """
    parts = path.parts
    anchored = path.is_absolute()
    current = Path(parts[0]) if anchored else Path()
    names = parts[1:] if anchored else parts
    for index, name in enumerate(names):
        if (current / name).exists():
            current = current / name
            continue
        last = index == len(names) - 1
        try:
            present = [p.name for p in current.iterdir() if (p.is_file() if last else p.is_dir())]
        except OSError:
            return None
        close = difflib.get_close_matches(name, present, n=1, cutoff=0.6)
        if not close:
            return None
        current = current / close[0]
    return current if current.is_file() and current != path else None
