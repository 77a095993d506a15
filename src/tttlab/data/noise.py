"""Label noise for the training pool: a seeded share of its labels flipped to another class.

One seeded permutation orders the pool and one seeded offset in 1 .. C-1 per point says where
its label goes, so the points flipped at 10% are flipped, to the same wrong class, at 30% too:
noise levels nest, and a sweep over them changes one thing at a time.
"""

from __future__ import annotations

import numpy as np

from tttlab.checks import check_int, check_number

NOISE_STREAM = 0x6E6F6973
"""Mixed into the seed, so the noise never reuses the draws of the split or the model."""


def check_noise(fraction: object) -> None:
    """A share of labels to flip: a number in [0, 1)."""
    check_number(fraction, "label_noise", min=0)
    if fraction >= 1:
        raise ValueError(
            f"label_noise must be a number in [0, 1) (the share of pool labels flipped), got "
            f"{fraction!r}: at 1 no label is left to learn from"
        )


def flip_labels(
    y: np.ndarray, fraction: float, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, flipped mask): round(fraction * N) labels moved to a different class, the
    points and their new classes drawn from `seed` alone."""
    check_noise(fraction)
    check_int(num_classes, "num_classes", min=2)
    check_int(seed, "seed", min=0)
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng([seed, NOISE_STREAM])
    order = rng.permutation(len(y))
    offsets = rng.integers(1, num_classes, size=len(y))
    flipped = np.zeros(len(y), dtype=bool)
    flipped[order[: round(fraction * len(y))]] = True
    noisy = np.where(flipped, (y + offsets) % num_classes, y)
    return noisy, flipped
