"""Settings of global training, shared by the CNN and the heads (plain Python, no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from tttlab.checks import check_choice, check_int, check_number

LRSchedule = Literal["constant", "cosine"]
LR_SCHEDULES: tuple[str, ...] = get_args(LRSchedule)


@dataclass
class TrainConfig:
    """Hyper-parameters of global training; the defaults suit the CNN on (Fashion-)MNIST.

    Ten epochs keep `tttlab demo` short; benchmarks/cnn_accuracy.py trains the d = 192 CNN for 30
    epochs to reach >= 88% test accuracy on Fashion-MNIST.
    """

    epochs: int = 10
    """Passes over the training set."""
    batch_size: int = 128
    """Examples per Adam step."""
    lr: float = 3e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """L2 penalty added by Adam to the gradient (torch.optim.Adam's weight_decay)."""
    lr_schedule: LRSchedule = "cosine"
    """"constant", or "cosine": anneal the rate to 0 over all steps, which settles Adam's noisy
    last epochs into a better minimum (worth about half a point on Fashion-MNIST)."""

    def __post_init__(self):
        check_int(self.epochs, "epochs", min=1)
        check_int(self.batch_size, "batch_size", min=1)
        check_number(self.lr, "lr", min=0, strict_min=True)
        check_number(self.weight_decay, "weight_decay", min=0)
        check_choice(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
