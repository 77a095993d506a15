"""Pretrained image encoders and embedding extraction: images -> a cached feature file.

enc = efficientnet_lite0(resolution=128)
embed(mnist_source("fashion-mnist"), enc, "features/fmnist-lite0")
"""

from tttlab._lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "tttlab.encoders.backbones": [
            "ENCODERS",
            "Encoder",
            "WeightsError",
            "build_encoder",
            "clip_vit",
            "efficientnet_lite0",
        ],
        "tttlab.encoders.extract": ["ImageError", "embed", "folder_source", "mnist_source"],
    },
)
