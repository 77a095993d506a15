"""One training loop for every global model: the CNN on images and heads on fixed features.

Adam on shuffled minibatches, validation after each epoch, and the best-validation-accuracy
weights restored at the end. The shuffling generator and the global RNG (dropout) are seeded from
`fit`'s `seed`; the caller seeds the model's initialisation, e.g. `torch.manual_seed(seed)`
before building it, so the same seeds give the same weights.

    torch.manual_seed(0)
    model = CNN(size_scale=1.0)
    result = fit(model, splits.train_x, splits.train_y, splits.val_x, splits.val_y, TrainConfig())
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tttlab.models.config import TrainConfig
from tttlab.tensors import as_batch, as_class_indices


@dataclass
class TrainResult:
    """What `fit` did: per-epoch history and the epoch whose weights the model now holds."""

    history: list[dict[str, float]]
    """One dict per epoch: epoch (1-based), train_loss, val_loss, val_acc."""
    best_epoch: int
    """The epoch with the highest validation accuracy (the earliest on ties)."""
    best_val_acc: float
    """Validation accuracy of the restored weights."""
    seconds: float
    """Wall-clock time of the whole fit."""


def _num_classes(model: nn.Module) -> int:
    """Outputs of the model's last layer, which every tttlab model names `classifier`."""
    clf = getattr(model, "classifier", None)
    if not isinstance(clf, nn.Linear):
        raise TypeError(
            f"{type(model).__name__} has no `classifier` nn.Linear: use a tttlab model "
            "(CNN, LinearHead, MLPHead) or expose the last layer as `classifier`"
        )
    return clf.out_features


@torch.no_grad()
def _batched(
    fn: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    batch_size: int,
    device: str | torch.device,
) -> torch.Tensor:
    """Apply `fn` in eval mode over batches of x; float32 CPU result, model's mode restored."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = as_batch(x, "x")
    was_training = model.training
    model.to(device).eval()
    try:
        out = [
            fn(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out)


def predict_logits(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    batch_size: int = 4096,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Class logits (N, C) of `model` on x, in eval mode and batches."""
    return _batched(model, model, x, batch_size, device)


def apply_model(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    batch_size: int = 4096,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Any module's outputs on x (a trunk's activations, say), in eval mode and batches."""
    return _batched(model, model, x, batch_size, device)


def extract_features(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    batch_size: int = 4096,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Last-layer input features (N, d) of x via `model.features`: what TTT fine-tunes on."""
    if not callable(getattr(model, "features", None)):
        raise TypeError(
            f"{type(model).__name__} has no `features(x)` method: use a tttlab model "
            "(CNN, LinearHead, MLPHead) or add one returning the input of `classifier`"
        )
    return _batched(model.features, model, x, batch_size, device)


def fit(
    model: nn.Module,
    train_x: torch.Tensor | np.ndarray,
    train_y: torch.Tensor | np.ndarray,
    val_x: torch.Tensor | np.ndarray,
    val_y: torch.Tensor | np.ndarray,
    cfg: TrainConfig,
    device: str | torch.device = "cpu",
    progress: bool = True,
    seed: int = 0,
) -> TrainResult:
    """Train `model` in place with Adam and leave it holding its best-validation weights.

    The model ends on `device` in eval mode. Inputs are images for the CNN or feature rows for a
    head; labels are class indices in [0, model.classifier.out_features).
    """
    num_classes = _num_classes(model)
    train_x, val_x = as_batch(train_x, "train_x"), as_batch(val_x, "val_x")
    train_y = as_class_indices(train_y, len(train_x), num_classes, "train_y")
    val_y = as_class_indices(val_y, len(val_x), num_classes, "val_y")
    if train_x.shape[1:] != val_x.shape[1:]:
        raise ValueError(
            f"train_x rows have shape {tuple(train_x.shape[1:])} but val_x rows have "
            f"{tuple(val_x.shape[1:])}: both must come from the same data or feature extractor"
        )

    start = time.perf_counter()
    model.to(device)
    train_x, train_y = train_x.to(device), train_y.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(len(train_x) / cfg.batch_size)
    cosine = cfg.lr_schedule == "cosine"
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)) if cosine else 1.0
    )
    order_gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    best_state, best_epoch, best_acc = None, 0, -1.0

    # fork_rng keeps the caller's global RNG untouched while dropout draws from a seeded one.
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        bar = tqdm(range(1, cfg.epochs + 1), desc="train", unit="epoch", disable=not progress)
        for epoch in bar:
            model.train()
            order = torch.randperm(len(train_x), generator=order_gen).to(device)
            total = 0.0
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)

            logits = predict_logits(model, val_x, device=device)
            val_loss = F.cross_entropy(logits, val_y).item()
            val_acc = (logits.argmax(dim=1) == val_y).float().mean().item()
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": total / len(train_x),
                    "val_loss": val_loss,
                    "val_acc": val_acc,
                }
            )
            if val_acc > best_acc:  # strict: ties keep the earlier epoch
                best_state, best_epoch, best_acc = copy.deepcopy(model.state_dict()), epoch, val_acc
            bar.set_postfix(loss=f"{total / len(train_x):.4f}", val_acc=f"{val_acc:.4f}")

    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(history, best_epoch, best_acc, time.perf_counter() - start)
