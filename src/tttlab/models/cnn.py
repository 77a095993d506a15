"""The width-scalable LeNet-style CNN whose last-layer width d is the paper's model-size axis.

conv -> ReLU -> maxpool2 -> conv -> ReLU -> maxpool2 -> flatten (d features) -> Linear(d, classes),
no padding. One number, `size_scale`, sets kernels and channels: d = 25 at 0.35 (280 parameters),
d = 192 at 1.0, d = 1152 at 4.0. Module names match the checkpoints released with the paper, so
their state dicts load as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from tttlab.models.layouts import CNN_KEYS
from tttlab.models.shapes import CNNShape, cnn_shape, find_scale

CHECKPOINT_KEYS = CNN_KEYS


class CNN(nn.Module):
    """LeNet-style CNN; `features(x)` is the d-dim input of `classifier`, the last layer."""

    def __init__(
        self, size_scale: float, num_classes: int = 10, in_channels: int = 1, image_size: int = 28
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.size_scale = size_scale
        self.shape = cnn_shape(size_scale, image_size)
        k1, k2, c1, c2, d = self.shape
        self.feature_extractor = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=k1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=k2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(d, num_classes)

    @property
    def feature_width(self) -> int:
        """d, the width of the features the last layer sees."""
        return self.shape.feature_width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last-layer input features, (B, d) for images (B, in_channels, H, W)."""
        return self.feature_extractor(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, (B, num_classes)."""
        return self.classifier(self.features(x))

    def as_sequential(self) -> nn.Sequential:
        """The same layers (shared, not copied) in forward order: how TTT cuts off its last ones."""
        return nn.Sequential(*self.feature_extractor, self.classifier)


def cnn_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    width: int | None = None,
    num_classes: int | None = None,
    image_size: int = 28,
) -> CNN:
    """Build the CNN a checkpoint was saved from (shapes -> scale) and load its weights.

    `width` and `num_classes`, where given, are checked against the checkpoint, so a run never
    silently uses a model of another size than it asked for.
    """
    missing = [k for k in CHECKPOINT_KEYS if k not in state_dict]
    extra = sorted(k for k in state_dict if k not in CHECKPOINT_KEYS)
    if missing or extra:
        raise ValueError(
            f"not a tttlab CNN checkpoint: missing keys {missing}, unexpected keys {extra}; "
            f"expected exactly {list(CHECKPOINT_KEYS)}"
        )
    conv1 = state_dict["feature_extractor.0.weight"]
    conv2 = state_dict["feature_extractor.3.weight"]
    head = state_dict["classifier.weight"]
    if conv1.ndim != 4 or conv2.ndim != 4 or head.ndim != 2:
        raise ValueError(
            "checkpoint tensors have the wrong rank: conv weights must be 4-D and "
            f"classifier.weight 2-D, got {tuple(conv1.shape)}, {tuple(conv2.shape)}, "
            f"{tuple(head.shape)}"
        )
    classes, d = head.shape
    if width is not None and d != width:
        raise ValueError(
            f"checkpoint has feature width {d} (classifier.weight is {classes}×{d}) but width "
            f"{width} was requested; pass width={d} or use the matching checkpoint"
        )
    if num_classes is not None and classes != num_classes:
        raise ValueError(
            f"checkpoint has {classes} classes (classifier.weight is {classes}×{d}) but "
            f"num_classes={num_classes} was requested; pass num_classes={classes} or use the "
            "matching checkpoint"
        )
    found = CNNShape(conv1.shape[-1], conv2.shape[-1], conv1.shape[0], conv2.shape[0], d)
    upper = max((found.channels2 + 8) / 20, found.channels1 / 4) + 0.05
    scale = find_scale(lambda s: s == found, upper, image_size)
    if scale is None:
        raise ValueError(
            f"no size_scale builds the checkpoint's architecture {found} at image size "
            f"{image_size}: pass the image_size it was trained on, or check the checkpoint"
        )
    model = CNN(scale, num_classes=classes, in_channels=conv1.shape[1], image_size=image_size)
    model.load_state_dict(state_dict, strict=True)
    return model


def live_cnn(
    size_scale: float,
    sample: torch.Tensor,
    seed: int = 0,
    num_classes: int = 10,
    min_alive: float = 0.01,
    max_draws: int = 20,
) -> tuple[CNN, int]:
    """A freshly initialised CNN whose features are not (nearly) all zero on `sample`.

    The one-channel CNNs can start dead: every ReLU output is zero, no gradient flows and
    training stays at chance (d = 25 does so for seed 0). Redraw, seeded, until at least
    `min_alive` of the features are positive; returns the model and how many draws were rejected.
    """
    for draw in range(max_draws):
        torch.manual_seed(seed + 7919 * draw)  # a prime stride keeps draws apart from other seeds
        model = CNN(size_scale, num_classes=num_classes, image_size=sample.shape[-1])
        with torch.no_grad():
            alive = (model.features(sample) > 0).float().mean().item()
        if alive >= min_alive:
            return model, draw
    raise RuntimeError(
        f"{max_draws} initialisations of the size_scale={size_scale} CNN were all dead on the "
        "sample (no positive features): check that the images are normalised"
    )
