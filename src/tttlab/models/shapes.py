"""The CNN family's shape arithmetic: kernels, channels and feature width d at each size_scale.

Plain Python: configs check a width against it without importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple


class CNNShape(NamedTuple):
    """Kernel sizes, channel counts and feature width of the CNN at one size_scale."""

    kernel1: int
    kernel2: int
    channels1: int
    channels2: int
    feature_width: int


def cnn_shape(size_scale: float, image_size: int = 28) -> CNNShape:
    """The architecture at `size_scale`: the one place the scale-to-layers arithmetic lives."""
    if not (math.isfinite(size_scale) and size_scale > 0):
        raise ValueError(f"size_scale must be a finite number > 0, got {size_scale}")
    kernel1 = 3 if size_scale < 0.5 else 5
    kernel2 = 5 if size_scale > 0.5 else 3
    channels1 = max(1, round(4 * size_scale))
    channels2 = max(1, round(20 * size_scale - 8)) if size_scale > 0.5 else channels1
    side = ((image_size - kernel1 + 1) // 2 - kernel2 + 1) // 2
    if side < 1:
        raise ValueError(
            f"image_size={image_size} is too small for kernels {kernel1} and {kernel2} with two "
            f"2x2 poolings: use images of at least {2 * (kernel2 + 1) + kernel1 - 1} pixels"
        )
    return CNNShape(kernel1, kernel2, channels1, channels2, channels2 * side * side)


def find_scale(matches: Callable[[CNNShape], bool], upper: float, image_size: int) -> float | None:
    """The largest scale on the paper's 0.05 grid whose shape matches, else on a 0.01 grid.

    Every distinct architecture is reached on the 0.01 grid (the breakpoints of `cnn_shape` lie
    on multiples of 0.025), and the 0.05 grid gives the paper's own scales (0.35 for d = 25).
    """
    for step in (20, 100):
        for k in range(math.ceil(upper * step), 0, -1):
            scale = k / step
            try:
                if matches(cnn_shape(scale, image_size)):
                    return scale
            except ValueError:  # image too small at this scale; smaller ones may still fit
                continue
    return None


def reachable_widths(max_width: int = 1152, image_size: int = 28) -> list[int]:
    """All feature widths d <= max_width that some size_scale produces, ascending."""
    widths = set()
    for k in range(1, math.ceil(((max_width + 8) / 20 + 0.05) * 100) + 1):
        try:
            widths.add(cnn_shape(k / 100, image_size).feature_width)
        except ValueError:
            continue
    return sorted(w for w in widths if w <= max_width)


def scale_for_width(width: int, image_size: int = 28) -> float:
    """The size_scale giving feature width `width` (the paper's scale where there is one)."""
    # channels2 <= width bounds the scale: channels2 = round(20 s - 8) for s > 0.5.
    scale = find_scale(lambda s: s.feature_width == width, (width + 8) / 20 + 0.05, image_size)
    if scale is None:
        widths = reachable_widths(max(2 * width, 64), image_size)
        nearby = sorted(widths, key=lambda w: (abs(w - width), w))[:4]
        raise ValueError(
            f"no size_scale gives feature width {width} at image size {image_size}; "
            f"nearby reachable widths: {sorted(nearby)} (see reachable_widths())"
        )
    return scale
