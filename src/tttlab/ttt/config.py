"""Hyper-parameters of test-time training on a neighbourhood (plain Python, no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from tttlab.checks import check_choice, check_int, check_number

Method = Literal["erm", "sequential"]
SCHEDULES: tuple[str, ...] = get_args(Method)
"""The engine's optimisation schedules (TTTConfig.method)."""
Gain = Literal["all", "variance", "margin"]
GAINS: tuple[str, ...] = get_args(Gain)
"""Which test points are fine-tuned (TTTConfig.gain)."""


Layers = int | Literal["all"]
"""How many of a model's last layers (those holding parameters) TTT tunes, or "all" of them."""


def check_layers(value: object, name: str = "layers") -> None:
    """A positive number of layers, or "all"."""
    if value != "all":
        try:
            check_int(value, name, min=1)
        except ValueError:
            raise ValueError(
                f"{name} must be a number of layers >= 1 or 'all', got {value!r}"
            ) from None


@dataclass
class TTTConfig:
    """Hyper-parameters of test-time training on a neighbourhood."""

    k: int = 50
    """Neighbours fine-tuned on per test point: the first k columns of the neighbour indices."""
    epochs: int = 50
    """Full-batch Adam steps for "erm"; passes over the neighbours for "sequential"."""
    lr: float = 0.01
    """Adam learning rate."""
    method: Method = "erm"
    """"erm": full-batch Adam on all K neighbours; "sequential": one step per neighbour, nearest
    first."""
    l2: float = 0.0
    """Pull toward the global weights: loss += l2 / 2 * ||theta - theta_global||^2."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's moment decay rates (torch defaults)."""
    eps: float = 1e-8
    """Adam's denominator epsilon (torch default)."""
    gain: Gain = "all"
    """Adaptive compute: fine-tune all test points, or only those whose predicted gain is above
    gain_threshold (the rest keep the global head's answer): variance (1 - SIFT's posterior
    variance of the point given its neighbours over its prior variance: how much the neighbourhood
    tells about it) or margin (1 - the global head's top-two probability margin)."""
    gain_threshold: float = 0.5
    """Adaptive compute: points with predicted gain above this (in [0, 1]) are fine-tuned."""
    layers: Layers = 1
    """The last layers (those holding parameters) fine-tuned per test point: 1, today's last
    linear layer alone; 2, 3, ...; or all for the whole model."""
    chunk_size: int | None = None
    """Test points fine-tuned together, for memory and speed only (on CPU, results are bit-identical
    for every chunk size: see the module doc); None: `auto_chunk_size` of k, head and device."""

    def __post_init__(self):
        check_choice(self.method, "method", SCHEDULES)
        check_choice(self.gain, "gain", GAINS)
        check_number(self.gain_threshold, "gain_threshold", min=0, max=1)
        check_int(self.k, "k", min=1)
        check_int(self.epochs, "epochs", min=0)
        check_number(self.lr, "lr", min=0, strict_min=True)
        check_number(self.l2, "l2", min=0)
        check_number(self.eps, "eps", min=0)
        check_layers(self.layers)
        if self.chunk_size is not None:
            check_int(self.chunk_size, "chunk_size", min=1)
        if len(tuple(self.betas)) != 2:
            raise ValueError(f"betas must be two numbers (beta1, beta2), got {self.betas!r}")
        self.betas = tuple(self.betas)
        for i, beta in enumerate(self.betas):
            check_number(beta, f"betas[{i}]", min=0)
            if beta >= 1:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {beta!r}")
