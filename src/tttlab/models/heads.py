"""Heads trained on fixed features, e.g. the CNN's or CLIP's last-layer embeddings.

Like every tttlab model a head exposes `features(x)` (the input of its last layer), `classifier`,
the last `nn.Linear`, and `as_sequential()`, its layers in order: test-time training tunes
`classifier` on `features` by default, or the last N layers (`tttlab.ttt.tail`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

HEAD_KINDS = ("linear", "mlp")


class LinearHead(nn.Module):
    """Multinomial logistic regression: the features are the inputs themselves."""

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.classifier = nn.Linear(in_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Identity: a linear head's last layer sees its input."""
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)

    def as_sequential(self) -> nn.Sequential:
        """Its one layer: how TTT cuts off its last ones."""
        return nn.Sequential(self.classifier)


class MLPHead(nn.Module):
    """One hidden layer, Linear -> ReLU -> Dropout -> Linear; TTT tunes the last Linear, or both."""

    def __init__(self, in_dim: int, num_classes: int, hidden_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(hidden_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden activations, (B, hidden_dim); dropout is active only in training mode."""
        return self.hidden(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(x))

    def as_sequential(self) -> nn.Sequential:
        """The same layers (shared, not copied) in forward order: how TTT cuts off its last ones."""
        return nn.Sequential(*self.hidden, self.classifier)


def make_head(
    kind: str, in_dim: int, num_classes: int, hidden_dim: int = 256, dropout: float = 0.1
) -> LinearHead | MLPHead:
    """Build a head by name; hidden_dim and dropout apply to "mlp" only."""
    if kind not in HEAD_KINDS:
        raise ValueError(f"head kind {kind!r} is not supported; use one of {HEAD_KINDS}")
    for name, value in (("in_dim", in_dim), ("num_classes", num_classes)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if kind == "linear":
        return LinearHead(in_dim, num_classes)
    if hidden_dim < 1:
        raise ValueError(f"hidden_dim must be >= 1, got {hidden_dim}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
    return MLPHead(in_dim, num_classes, hidden_dim, dropout)


def head_parts(head: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Linear]:
    """Split a model into (features, last linear layer): what TTT tunes, on what it sees.

    A bare `nn.Linear` is its own last layer on identity features; any other model must expose
    `features(x)` and `classifier` (tttlab's LinearHead, MLPHead and CNN all do).
    """
    if isinstance(head, nn.Linear):
        return (lambda x: x), head
    clf = getattr(head, "classifier", None)
    if not isinstance(clf, nn.Linear) or not callable(getattr(head, "features", None)):
        raise TypeError(
            f"{type(head).__name__} has no `features(x)` method and `classifier` nn.Linear: "
            "pass an nn.Linear, a tttlab head (make_head) or a model with those two members"
        )
    return head.features, clf
