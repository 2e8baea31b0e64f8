"""What a run trains on, recorded in its checkpoint so that a resume cannot quietly change it.

A recipe names its data by settings (``data.root``, ``--data-dir``, a relative path
read against the current folder), so the same recipe can load other data from
another folder or after a file changed. The checkpoint therefore records where the
data came from and two SHA-256 fingerprints: of the examples (every input, and the
labels of the held-out splits) and of the labeled split (which examples carry labels,
and the labels). A resume whose data or split differ is refused, naming both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from ssl_core.engine.data import SplitData


@dataclass(frozen=True)
class DataIdentity:
    """Where a run's data came from (``None``: handed over in memory) and its fingerprints."""

    location: str | None
    examples: str
    split: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The fingerprints a resume compares, and how its error names each.
COMPARED = (("examples", "data"), ("split", "labeled split"))


def identify(data: SplitData, location: Path | None) -> DataIdentity:
    """The fingerprints of ``data`` (hashed on the CPU, so any device gives the same)."""
    examples = (data.unlabeled_x, data.val_x, data.val_y, data.test_x, data.test_y)
    split = (data.labeled_indices, data.labeled_y)
    return DataIdentity(
        str(location) if location is not None else None, _sha256(examples), _sha256(split)
    )


def _sha256(tensors: Iterable[Tensor]) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(array.data)
    return digest.hexdigest()


def data_difference(recorded: dict[str, Any], now: DataIdentity) -> str | None:
    """How the data a checkpoint recorded differ from the run's now, or ``None``."""
    for key, what in COMPARED:
        if recorded.get(key) != getattr(now, key):
            then = _where(recorded.get("location"), str(recorded.get(key)))
            here = _where(now.location, getattr(now, key))
            return f"the run trained on other {what}: {then} then, {here} now"
    return None


def _where(location: str | None, fingerprint: str) -> str:
    return f"{location or 'data in memory'} (sha256 {fingerprint[:12]})"
