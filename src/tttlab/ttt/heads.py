"""Which part of a head TTT tunes: only its last linear layer, on the features that feed it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def head_parts(head: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Linear]:
    """Split a head into (features, last linear layer).

    A bare `nn.Linear` is its own last layer on identity features; any other head must expose
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
