"""The batched TTT engine: fine-tune one copy of a linear head per test point, many at once.

Each test point b gets its own weights W_BCD (bias folded in as an input column of ones), is
trained on its K neighbours X_BKD with labels y_BK, and predicts its own input. The loss is the sum
over test points of each point's mean cross-entropy, so every point's gradient is exactly the one
it would get alone; Adam is element-wise, so one fused Adam step over the stacked weights is B
independent Adam steps. Gradients are written in closed form (softmax minus one-hot), which
replaces autograd's bookkeeping with two batched matmuls per epoch.

The true class's logit gradient p_y - 1 is computed as -(sum of the other classes' p), not by
subtracting 1: when p_y is near 1 the subtraction leaves only float32 rounding noise, which Adam's
normalisation then amplifies into weight updates. The cancellation-free form keeps the engine
several times closer to a float64 run than the plain form or autograd's own float32 loop
(benchmarks/ttt_speed.py prints both against float64).

Nothing here is random: a point's result depends only on its own neighbours, never on the chunk
it ran in or on the order of the test set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

METHODS = ("erm", "sequential")


@dataclass
class TTTConfig:
    """Hyper-parameters of test-time training on a neighbourhood."""

    k: int = 50
    """Neighbours retrieved per test point."""
    epochs: int = 50
    """Full-batch Adam steps for "erm"; passes over the neighbours for "sequential"."""
    lr: float = 0.01
    """Adam learning rate."""
    method: str = "erm"
    """"erm": full-batch Adam on all K neighbours; "sequential": one step per neighbour, nearest
    first."""
    l2: float = 0.0
    """Pull toward the global weights: loss += l2 / 2 * ||theta - theta_global||^2."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's moment decay rates (torch defaults)."""
    eps: float = 1e-8
    """Adam's denominator epsilon (torch default)."""

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not supported; use one of {METHODS}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")
        self.betas = tuple(self.betas)


CLASSES_LAST_FROM = 32
"""From this many classes on, logits are laid out (B, K, C) so softmax runs over a contiguous class
axis; below it (B, C, K), because a softmax over a short last axis is several times slower."""


def augment(x: torch.Tensor, width: int) -> torch.Tensor:
    """x with a column of ones (so a bias is a weight column) and zeros up to `width` columns.

    The zero padding rounds rows to a multiple of 8 floats, which BLAS multiplies faster; the
    padded weights get zero gradients, so Adam never moves them.
    """
    pad = width - x.shape[-1] - 1
    return torch.cat([x, x.new_ones(*x.shape[:-1], 1), x.new_zeros(*x.shape[:-1], pad)], dim=-1)


def padded_width(d: int) -> int:
    """Columns of the augmented inputs: d features and a bias column, rounded up to 8s."""
    return -(-(d + 1) // 8) * 8


@torch.no_grad()
def finetune(
    weight_CD: torch.Tensor,
    bias_C: torch.Tensor,
    X_BKD: torch.Tensor,
    y_BK: torch.Tensor,
    cfg: TTTConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fine-tune B copies of the head (weight, bias) on B neighbourhoods; return (W_BCD, b_BC)."""
    B, K, D = X_BKD.shape
    C = weight_CD.shape[0]
    XA_BKD = augment(X_BKD, padded_width(D))
    W0_CD = augment(weight_CD.detach(), XA_BKD.shape[-1]).to(XA_BKD)
    W0_CD[:, D] = bias_C.detach()
    W_BCD = W0_CD.expand(B, -1, -1).clone()
    if cfg.epochs > 0:
        _train(W_BCD, W0_CD, XA_BKD, F.one_hot(y_BK, C).to(XA_BKD.dtype), cfg)
    return W_BCD[:, :, :D], W_BCD[:, :, D]


def _train(W_BCD, W0_CD, XA_BKD, onehot_BKC, cfg: TTTConfig) -> None:
    """Run cfg's Adam steps on W_BCD in place."""
    K, C = onehot_BKC.shape[1:]
    others_BKC = 1.0 - onehot_BKC
    grad_BCD = torch.empty_like(W_BCD)
    adam_step = _fused_adam(W_BCD, grad_BCD, cfg)
    if cfg.method == "sequential":
        for _ in range(cfg.epochs):
            for j in range(K):
                x_BD1 = XA_BKD[:, j, :, None]
                logits_BC1 = torch.bmm(W_BCD, x_BD1)
                onehot_BC1, others_BC1 = onehot_BKC[:, j, :, None], others_BKC[:, j, :, None]
                dlogits_BC1 = _softmax_minus_onehot(logits_BC1, onehot_BC1, others_BC1, dim=1)
                _write_grad(grad_BCD, dlogits_BC1, x_BD1.mT, 1.0, W_BCD, W0_CD, cfg)
                adam_step()
    else:
        classes_last = C >= CLASSES_LAST_FROM
        if classes_last:
            onehot, others = onehot_BKC, others_BKC
        else:
            XAt_BDK = XA_BKD.mT.contiguous()
            onehot, others = onehot_BKC.mT.contiguous(), others_BKC.mT.contiguous()
        for _ in range(cfg.epochs):
            if classes_last:
                logits_BKC = torch.bmm(XA_BKD, W_BCD.mT)
                dlogits_BCK = _softmax_minus_onehot(logits_BKC, onehot, others, dim=2).mT
            else:
                logits_BCK = torch.bmm(W_BCD, XAt_BDK)
                dlogits_BCK = _softmax_minus_onehot(logits_BCK, onehot, others, dim=1)
            # dL/dW = (softmax - onehot) X / K; the mean over K folds into alpha.
            _write_grad(grad_BCD, dlogits_BCK, XA_BKD, 1.0 / K, W_BCD, W0_CD, cfg)
            adam_step()


def _fused_adam(W: torch.Tensor, grad: torch.Tensor, cfg: TTTConfig) -> Callable[[], None]:
    """A step function: one fused Adam update of W from grad, torch.optim.Adam(fused=True)'s kernel.

    Called directly rather than through `torch.optim.Adam.step`, whose per-call bookkeeping costs
    more than the update itself for small heads.
    """
    exp_avg, exp_avg_sq = torch.zeros_like(W), torch.zeros_like(W)
    step = torch.zeros((), dtype=torch.float32, device=W.device)
    beta1, beta2 = cfg.betas

    def adam_step() -> None:
        step.add_(1)
        torch._fused_adam_(
            [W], [grad], [exp_avg], [exp_avg_sq], [], [step],
            lr=cfg.lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=cfg.eps,
            amsgrad=False, maximize=False,
        )  # fmt: skip

    return adam_step


def _softmax_minus_onehot(logits, onehot, others, dim: int) -> torch.Tensor:
    """softmax(logits) - onehot along the class axis `dim`; the true class's entry is computed as
    minus the other classes' summed probabilities, free of cancellation (see the module doc)."""
    p = torch.softmax(logits, dim=dim).mul_(others)
    return p.addcmul_(onehot, p.sum(dim, keepdim=True), value=-1.0)


def _write_grad(grad, a, b, alpha, W, W0, cfg: TTTConfig) -> None:
    """grad = alpha * a @ b (+ l2 * (W - W0)), written in place."""
    if cfg.l2 > 0:
        torch.baddbmm(W - W0, a, b, beta=cfg.l2, alpha=alpha, out=grad)
    else:
        torch.baddbmm(grad, a, b, beta=0.0, alpha=alpha, out=grad)


def auto_chunk_size(K: int, D: int, C: int, device: torch.device | str = "cpu") -> int:
    """Test points per chunk: cache-sized on CPU (speed), a slice of free memory on CUDA."""
    Dp = padded_width(D)
    per_point = 4 * (K * Dp * 2 + K * C * 3 + C * Dp * 5)  # bytes, float32
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free // 4
    else:
        budget = 4 * 2**20  # a few MB keeps each epoch's matmuls inside L2/L3
    return int(max(1, min(budget // per_point, 65536)))


def ttt_logits(
    weight_CD: torch.Tensor,
    bias_C: torch.Tensor,
    pool_x: torch.Tensor,
    pool_y: torch.Tensor,
    query_x: torch.Tensor,
    neighbours: torch.Tensor,
    cfg: TTTConfig,
    chunk_size: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> torch.Tensor:
    """Logits (B x C) of each query under its own head fine-tuned on its neighbours.

    neighbours: B x k pool indices, nearest first (as returned by `KNNIndex.search`).
    """
    device = torch.device(device)
    B, K = neighbours.shape
    D, C = weight_CD.shape[1], weight_CD.shape[0]
    chunk = chunk_size or auto_chunk_size(K, D, C, device)
    W_CD = weight_CD.detach().to(device, torch.float32)
    b_C = bias_C.detach().to(device, torch.float32)
    out = torch.empty(B, C, dtype=torch.float32)
    bar = tqdm(total=B, desc=f"ttt ({cfg.method})", unit="pt", disable=not progress, leave=False)
    for s in range(0, B, chunk):
        nbr = neighbours[s : s + chunk]
        X_BKD = pool_x[nbr].to(device, torch.float32)
        y_BK = pool_y[nbr].to(device)
        W_BCD, b_BC = finetune(W_CD, b_C, X_BKD, y_BK, cfg)
        x_BD1 = query_x[s : s + chunk].to(device, torch.float32)[:, :, None]
        out[s : s + chunk] = torch.baddbmm(b_BC[:, :, None], W_BCD, x_BD1)[:, :, 0].cpu()
        bar.update(len(nbr))
    bar.close()
    return out
