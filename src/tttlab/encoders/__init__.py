"""Pretrained image encoders and embedding extraction: images -> a cached feature file.

enc = efficientnet_lite0(resolution=128)
embed(mnist_source("fashion-mnist"), enc, "features/fmnist-lite0")
"""

from tttlab.encoders.backbones import (
    ENCODERS,
    Encoder,
    WeightsError,
    build_encoder,
    clip_vit,
    efficientnet_lite0,
)
from tttlab.encoders.extract import ImageError, embed, folder_source, mnist_source

__all__ = [
    "ENCODERS",
    "Encoder",
    "ImageError",
    "WeightsError",
    "build_encoder",
    "clip_vit",
    "efficientnet_lite0",
    "embed",
    "folder_source",
    "mnist_source",
]
