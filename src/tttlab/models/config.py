"""Settings of global training, shared by the CNN and the heads (plain Python, no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from tttlab.checks import check_choice, check_int, check_number

LRSchedule = Literal["constant", "cosine"]
LR_SCHEDULES: tuple[str, ...] = get_args(LRSchedule)
Stop = Literal["auto", "epochs", "plateau", "converged"]
STOPS: tuple[str, ...] = get_args(Stop)
Ended = Literal["epochs", "plateau", "converged", "budget"]
"""How a training ended: its fixed epochs ran, validation loss stopped improving, the full-batch
solver converged, or the step budget ran out first (the model was still improving)."""


@dataclass
class TrainConfig:
    """Hyper-parameters of global training; the defaults suit the CNN on (Fashion-)MNIST.

    Heads on feature rows train until they stop improving (`stop` auto), so TTT's gain is measured
    against a converged baseline; the CNN trains a fixed number of epochs, as in the paper.
    """

    epochs: int = 10
    """Passes over the training set when training runs a fixed count (stop epochs: the CNN)."""
    batch_size: int = 128
    """Examples per Adam step."""
    lr: float = 3e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """L2 penalty: Adam adds weight_decay * w to the gradient; L-BFGS (stop converged) minimises
    the loss plus weight_decay / 2 * |w|^2, the same gradient."""
    lr_schedule: LRSchedule = "cosine"
    """"constant", or "cosine": anneal the rate to 0 over all steps of a fixed-epoch run, which
    settles Adam's noisy last epochs into a better minimum (worth about half a point on
    Fashion-MNIST). Training that stops on a plateau keeps the rate constant."""
    stop: Stop = "auto"
    """When global training ends: "epochs" after exactly `epochs` passes (the paper's protocol);
    "plateau" once validation loss has not improved by min_delta for `patience` epochs (the
    best-loss weights are kept); "converged" (linear heads) full-batch L-BFGS until no gradient
    entry exceeds `tol`; "auto": converged for linear heads, plateau for MLP heads, epochs for the
    CNN. plateau and converged stop after max_steps at most."""
    patience: int = 10
    """plateau: epochs without an improvement of min_delta before training stops."""
    min_delta: float = 1e-4
    """plateau: the least fall in validation loss (mean cross-entropy, nats) that counts."""
    tol: float = 1e-5
    """converged: L-BFGS stops once no gradient entry of the training loss exceeds this."""
    max_steps: int = 50_000
    """plateau and converged: the step budget (Adam steps; L-BFGS iterations, each a full pass);
    a model still improving when it is spent is reported as not converged."""

    def __post_init__(self):
        check_int(self.epochs, "epochs", min=1)
        check_int(self.batch_size, "batch_size", min=1)
        check_number(self.lr, "lr", min=0, strict_min=True)
        check_number(self.weight_decay, "weight_decay", min=0)
        check_choice(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        check_choice(self.stop, "stop", STOPS)
        check_int(self.patience, "patience", min=1)
        check_number(self.min_delta, "min_delta", min=0)
        check_number(self.tol, "tol", min=0, strict_min=True)
        check_int(self.max_steps, "max_steps", min=1)

    def stop_for(self, model: str) -> Literal["epochs", "plateau", "converged"]:
        """The stop rule `model` ("cnn", "linear" or "mlp") trains with: `stop`, with auto resolved.

        Raises when the rule does not apply: L-BFGS to convergence is for the convex linear head.
        """
        if self.stop == "auto":
            return {"cnn": "epochs", "linear": "converged"}.get(model, "plateau")
        if self.stop == "converged" and model != "linear":
            raise ValueError(
                f"stop='converged' runs L-BFGS on a convex problem, the linear head, but the "
                f"model is {model!r}: use --stop plateau (or auto) for it"
            )
        return self.stop

    def key(self, model: str) -> dict[str, Any]:
        """The settings a trained `model` depends on: the stop rule resolved, and only the fields
        that rule reads (fixed-epoch training keys as it did before the rule was a setting)."""
        stop = self.stop_for(model)
        common = {"weight_decay": self.weight_decay}
        if stop == "epochs":  # the key of every model trained before stop existed
            return common | {
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "lr": self.lr,
                "lr_schedule": self.lr_schedule,
            }
        if stop == "converged":
            return common | {"stop": stop, "tol": self.tol, "max_steps": self.max_steps}
        return common | {
            "stop": stop,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "max_steps": self.max_steps,
        }
