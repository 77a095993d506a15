"""One training loop for every global model: the CNN on images and heads on fixed features.

Adam on shuffled minibatches with validation after each epoch, for a fixed number of epochs or
until validation loss stops improving; or, for a linear head, full-batch L-BFGS to convergence
(`TrainConfig.stop`). The result says how training ended. The shuffling generator and the
global RNG (dropout) are seeded from `fit`'s `seed`; the caller seeds the model's
initialisation, e.g. `torch.manual_seed(seed)` before building it, so the same seeds give the
same weights.

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

from tttlab.models.cnn import CNN
from tttlab.models.config import Ended, TrainConfig
from tttlab.models.heads import LinearHead, MLPHead
from tttlab.tensors import as_batch, as_class_indices


@dataclass
class TrainResult:
    """What `fit` did: the validation history, the weights kept, and how training ended."""

    history: list[dict[str, float]]
    """One dict per validation: epoch (full passes so far), step (optimizer steps so far),
    train_loss, val_loss, val_acc."""
    best_epoch: int
    """The epoch whose weights the model holds: the best validation accuracy (stop epochs, the
    earliest on ties), the lowest validation loss (plateau), the last (converged, budget)."""
    best_val_acc: float
    """Validation accuracy of the kept weights."""
    seconds: float
    """Wall-clock time of the whole fit."""
    ended: Ended = "epochs"
    """epochs, plateau (stopped early), converged (L-BFGS reached tol) or budget (max_steps
    spent while still improving: not converged)."""
    steps: int = 0
    """Optimizer steps taken: Adam steps, or L-BFGS iterations."""

    @property
    def converged(self) -> bool:
        """False when the step budget ran out while the model was still improving."""
        return self.ended != "budget"

    def describe(self) -> str:
        """How training ended, in words, e.g. 'stopped early at step 4,200 (epoch 22)'."""
        return describe_ending(self.ended, self.steps, self.best_epoch)


def describe_ending(ended: str, steps: int, best_epoch: int) -> str:
    """A training's ending in words, from the values a run records."""
    return {
        "epochs": f"ran its fixed epochs ({steps:,} steps; kept epoch {best_epoch})",
        "plateau": f"stopped early at step {steps:,}: validation loss stopped improving "
        f"(kept epoch {best_epoch})",
        "converged": f"converged: L-BFGS reached its gradient tolerance at iteration {steps:,}",
        "budget": f"hit the step budget ({steps:,} steps) while still improving: NOT converged",
    }[ended]


def model_kind(model: nn.Module) -> str:
    """cnn, linear or mlp for tttlab's models (how `stop` auto treats them), else the class name."""
    kinds = {CNN: "cnn", LinearHead: "linear", MLPHead: "mlp"}
    return next((k for cls, k in kinds.items() if isinstance(model, cls)), type(model).__name__)


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


def apply_model(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    batch_size: int = 4096,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Any module's outputs on x (a trunk's activations, say), in eval mode and batches."""
    return _batched(model, model, x, batch_size, device)


predict_logits = apply_model
"""Class logits (N, C) of a classifier on x, in eval mode and batches: `apply_model`, named for
what a classifier's outputs are."""


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
    """Train `model` in place by `cfg.stop`'s rule and leave it holding the kept weights.

    epochs: Adam for `cfg.epochs` passes, the best-validation-accuracy epoch kept. plateau: Adam
    until validation loss has not improved by min_delta for `patience` epochs, the lowest-loss
    weights kept. converged: full-batch L-BFGS to the gradient tolerance (linear heads). The model
    ends on `device` in eval mode. Inputs are images for the CNN or feature rows for a head;
    labels are class indices in [0, model.classifier.out_features).
    """
    num_classes = _num_classes(model)
    stop = cfg.stop_for(model_kind(model))
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
    device = torch.device(device)
    val = (val_x, val_y, device)
    # fork_rng keeps the caller's global RNG untouched while dropout draws from a seeded one.
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        if stop == "converged":
            result = _fit_lbfgs(model, train_x, train_y, val, cfg, progress)
        else:
            result = _fit_adam(model, train_x, train_y, val, cfg, stop, progress, seed)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def _validate(model: nn.Module, val: tuple, epoch: int, step: int, train_loss: float) -> dict:
    val_x, val_y, device = val
    logits = predict_logits(model, val_x, device=device)
    return {
        "epoch": epoch,
        "step": step,
        "train_loss": train_loss,
        "val_loss": F.cross_entropy(logits, val_y).item(),
        "val_acc": (logits.argmax(dim=1) == val_y).float().mean().item(),
    }


def _fit_adam(
    model: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val: tuple,
    cfg: TrainConfig,
    stop: str,
    progress: bool,
    seed: int,
) -> TrainResult:
    """Adam on shuffled minibatches: a fixed number of epochs, or until validation loss stops
    improving (within the step budget)."""
    fixed = stop == "epochs"
    per_epoch = math.ceil(len(train_x) / cfg.batch_size)
    budget = cfg.epochs * per_epoch if fixed else cfg.max_steps
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    cosine = fixed and cfg.lr_schedule == "cosine"
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / budget)) if cosine else 1.0
    )
    order_gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    best_state, best_epoch, best_acc, best_loss = None, 0, -1.0, math.inf
    ended, stale, step, epoch = ("epochs" if fixed else "budget"), 0, 0, 0
    total_epochs = cfg.epochs if fixed else math.ceil(budget / per_epoch)
    bar = tqdm(total=total_epochs, desc="train", unit="epoch", disable=not progress)
    while step < budget:
        epoch += 1
        model.train()
        order = torch.randperm(len(train_x), generator=order_gen).to(train_x.device)
        total, seen = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            if step == budget:
                break
            idx = order[i : i + cfg.batch_size]
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            total, seen = total + loss.item() * len(idx), seen + len(idx)
        record = _validate(model, val, epoch, step, total / seen)
        history.append(record)
        bar.update()
        bar.set_postfix(loss=f"{record['train_loss']:.4f}", val_acc=f"{record['val_acc']:.4f}")
        if fixed:
            if record["val_acc"] > best_acc:  # strict: ties keep the earlier epoch
                best_state, best_epoch = copy.deepcopy(model.state_dict()), epoch
                best_acc = record["val_acc"]
            continue
        if record["val_loss"] < best_loss:
            stale = 0 if record["val_loss"] < best_loss - cfg.min_delta else stale + 1
            best_state, best_epoch = copy.deepcopy(model.state_dict()), epoch
            best_acc, best_loss = record["val_acc"], record["val_loss"]
        else:
            stale += 1
        if stale >= cfg.patience:
            ended = "plateau"
            break
    bar.close()
    model.load_state_dict(best_state)
    return TrainResult(history, best_epoch, best_acc, 0.0, ended, step)


LBFGS_CHECK_EVERY = 20
"""L-BFGS iterations between validations (a history entry and a progress update)."""
LBFGS_BLOCK_ROWS = 65536
"""Rows per block of the full-batch loss: memory stays bounded at any pool size."""


def _fit_lbfgs(
    model: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val: tuple,
    cfg: TrainConfig,
    progress: bool,
) -> TrainResult:
    """Full-batch L-BFGS (strong Wolfe line search) on the mean cross-entropy plus the L2
    penalty, until no gradient entry exceeds tol: multinomial logistic regression solved."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=LBFGS_CHECK_EVERY,
        max_eval=25 * LBFGS_CHECK_EVERY,  # line searches never cut an iteration short
        tolerance_grad=cfg.tol,
        tolerance_change=1e-9,  # the loss no longer changes at float precision: converged too
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    n = len(train_x)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        total = 0.0
        for i in range(0, n, LBFGS_BLOCK_ROWS):
            block = (
                F.cross_entropy(
                    model(train_x[i : i + LBFGS_BLOCK_ROWS]),
                    train_y[i : i + LBFGS_BLOCK_ROWS],
                    reduction="sum",
                )
                / n
            )
            block.backward()
            total += block.item()
        if cfg.weight_decay:
            penalty = 0.5 * cfg.weight_decay * sum(p.pow(2).sum() for p in params)
            penalty.backward()
            total += penalty.item()
        return torch.tensor(total)

    model.train()
    history: list[dict[str, float]] = []
    ended, steps = "budget", 0
    bar = tqdm(total=cfg.max_steps, desc="train (L-BFGS)", unit="it", disable=not progress)
    while steps < cfg.max_steps:
        chunk = min(LBFGS_CHECK_EVERY, cfg.max_steps - steps)
        opt.param_groups[0]["max_iter"] = chunk
        loss = float(opt.step(closure))
        done = opt.state[params[0]].get("n_iter", 0) - steps
        steps += done
        bar.update(done)
        history.append(_validate(model, val, steps, steps, loss))
        model.train()
        if done < chunk:  # L-BFGS stopped on its own: the tolerance is met
            ended = "converged"
            break
    if ended == "budget" and _max_grad(closure, params) <= cfg.tol:
        ended = "converged"  # met on the budget's last iteration
    bar.close()
    last = history[-1]
    return TrainResult(history, last["epoch"], last["val_acc"], 0.0, ended, steps)


def _max_grad(closure: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> float:
    """The largest gradient entry of the full-batch loss at the current weights."""
    closure()
    return max(p.grad.abs().max().item() for p in params)
