"""The batched TTT engine: fine-tune one copy of a linear head per test point, many at once.

Each test point b gets its own weights W_BCD (bias folded in as an input column of ones), is
trained on its first cfg.k neighbours X_BKD with labels y_BK, and predicts its own input. The loss
is the sum over test points of each point's mean cross-entropy, so every point's gradient is
exactly the one it would get alone; Adam is element-wise, so one fused Adam step over the stacked
weights is B independent Adam steps. Gradients are written in closed form (softmax minus one-hot),
which replaces autograd's bookkeeping with two batched matmuls per epoch.

The true class's logit gradient p_y - 1 is computed as -(sum of the other classes' p), not by
subtracting 1: when p_y is near 1 the subtraction leaves only float32 rounding noise, which Adam's
normalisation then amplifies into weight updates. The cancellation-free form keeps the engine
several times closer to a float64 run than the plain form or autograd's own float32 loop
(benchmarks/ttt_speed.py prints both against float64).

Determinism. Nothing here is random, and a point's logits are bit-identical whatever the rest
of the test set, its order, the point's place in its chunk, or the chunk size (tested with
torch.equal, on CPU). Two things make this so. Every chunk is padded, with copies of its last point,
to at least 2 points and to a multiple of the CPU's threads: a batch of one takes BLAS's
single-matrix path, and torch's CPU softmax over a non-last axis computes the columns where it
splits its rows between threads on a scalar path, so a split inside a point's rows would change
that point's last bits (`_padded_chunk`). The other kernels (batched matmul, the element-wise fused
Adam) give each point the same bits whatever the batch, once a small odd k is padded to even with
a neighbour that adds nothing (`_pad_neighbours`). Not promised: the same bits across thread
counts, devices or torch/BLAS builds. On CUDA the automatic chunk size is a fixed function of the
problem's shape (never of free memory) and is recorded with a run, but no GPU has tested the
batch-invariance there.

Selection grids. `ttt_logits(lr_B=...)` gives each point its own learning rate, bit-identical to
a run of that point at cfg.lr = its lr: Adam's moments do not depend on lr, so the fused kernel
updates them at lr=0 (leaving the weights as they are) and the step is written out with the
kernel's float32 operations in its order (`_per_point_adam`). `ttt_logits(record_epochs=...)`
records each point's logits on its way to the last epoch count, bit-identical to separate runs
of each count. `ttt_grid` puts both together: a (k, lr, epochs) grid costs one run per k.
The per-point step is exact where the kernel runs its vector path on every element, as it does
here (whole points of a multiple of 8 floats); `_private_adam_ok`'s fallback keeps that kernel.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.adam import adam
from tqdm.auto import tqdm

from tttlab.checks import NonFiniteError, check_int
from tttlab.tensors import as_class_indices, as_matrix
from tttlab.ttt.config import TTTConfig

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
    """Fine-tune B copies of the head (weight, bias) on B neighbourhoods; return (W_BCD, b_BC).

    Trains on the first cfg.k of the K neighbours (nearest first), in X_BKD's floating dtype.
    """
    C, D = _check_head(weight_CD, bias_C)
    if X_BKD.ndim != 3 or not X_BKD.is_floating_point():
        raise ValueError(
            f"X_BKD must be a floating-point tensor (points, neighbours, features), got shape "
            f"{tuple(X_BKD.shape)} and dtype {X_BKD.dtype}"
        )
    B, K, _ = X_BKD.shape
    _check_width(X_BKD.shape[2], D, "X_BKD")
    _check_k(K, cfg, "X_BKD")
    y_BK = torch.as_tensor(y_BK)
    if y_BK.shape != (B, K):
        raise ValueError(
            f"y_BK has shape {tuple(y_BK.shape)} but X_BKD holds {B} x {K} neighbours: pass one "
            "label per neighbour"
        )
    X_BKD, y_BK = X_BKD[:, : cfg.k], y_BK[:, : cfg.k]
    y_BK = as_class_indices(y_BK.reshape(-1), B * cfg.k, C, "y_BK").reshape(B, cfg.k)
    _check_finite_rows(X_BKD.reshape(B, -1), "X_BKD", "neighbourhoods")
    W_BCD, b_BC = _finetune(weight_CD, bias_C, X_BKD, y_BK.to(X_BKD.device), cfg)
    bad = int((~torch.isfinite(W_BCD).all(2).all(1) | ~torch.isfinite(b_BC).all(1)).sum())
    if bad:
        raise NonFiniteError(_diverged(bad, B, "weights", cfg))
    return W_BCD, b_BC


Record = Callable[[int, torch.Tensor, torch.Tensor], None]
"""Called as record(epochs, W_BCD, b_BC) after each epoch (and at 0) with the weights so far."""


def _finetune(
    weight_CD, bias_C, X_BKD, y_BK, cfg: TTTConfig, lr_B=None, record: Record | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """finetune on checked inputs with exactly cfg.k neighbours; lr_B (float64, B) overrides cfg.lr
    per point."""
    B, K, D = X_BKD.shape
    C = weight_CD.shape[0]
    XA_BKD = augment(X_BKD, padded_width(D))
    W0_CD = augment(weight_CD.detach(), XA_BKD.shape[-1]).to(XA_BKD)
    W0_CD[:, D] = bias_C.detach()
    W_BCD = W0_CD.expand(B, -1, -1).clone()
    after_epoch = None
    if record is not None:
        record(0, W_BCD[:, :, :D], W_BCD[:, :, D])
        after_epoch = lambda e: record(e, W_BCD[:, :, :D], W_BCD[:, :, D])  # noqa: E731
    if cfg.epochs > 0:
        onehot_BKC = F.one_hot(y_BK, C).to(XA_BKD.dtype)
        _train(W_BCD, W0_CD, XA_BKD, onehot_BKC, cfg, lr_B, after_epoch)
    return W_BCD[:, :, :D], W_BCD[:, :, D]


def _train(W_BCD, W0_CD, XA_BKD, onehot_BKC, cfg: TTTConfig, lr_B=None, after_epoch=None) -> None:
    """Run cfg's Adam steps on W_BCD in place, calling after_epoch(e) after epoch e = 1, 2, ..."""
    K, C = onehot_BKC.shape[1:]
    others_BKC = 1.0 - onehot_BKC
    grad_BCD = torch.empty_like(W_BCD)
    if lr_B is None:
        adam_step = _fused_adam(W_BCD, grad_BCD, cfg)
    else:
        adam_step = _per_point_adam(W_BCD, grad_BCD, cfg, lr_B)
    if cfg.method == "sequential":
        for epoch in range(1, cfg.epochs + 1):
            for j in range(K):
                x_BD1 = XA_BKD[:, j, :, None]
                logits_BC1 = torch.bmm(W_BCD, x_BD1)
                onehot_BC1, others_BC1 = onehot_BKC[:, j, :, None], others_BKC[:, j, :, None]
                dlogits_BC1 = _softmax_minus_onehot(logits_BC1, onehot_BC1, others_BC1, dim=1)
                _write_grad(grad_BCD, dlogits_BC1, x_BD1.mT, 1.0, W_BCD, W0_CD, cfg)
                adam_step()
            if after_epoch is not None:
                after_epoch(epoch)
    else:
        classes_last = C >= CLASSES_LAST_FROM
        if classes_last:
            onehot, others = onehot_BKC, others_BKC
        else:
            if K % 2:  # see _pad_neighbours
                XA_BKD, onehot_BKC, others_BKC = _pad_neighbours(XA_BKD, onehot_BKC, others_BKC)
            XAt_BDK = XA_BKD.mT.contiguous()
            onehot, others = onehot_BKC.mT.contiguous(), others_BKC.mT.contiguous()
        for epoch in range(1, cfg.epochs + 1):
            if classes_last:
                logits_BKC = torch.bmm(XA_BKD, W_BCD.mT)
                dlogits_BCK = _softmax_minus_onehot(logits_BKC, onehot, others, dim=2).mT
            else:
                logits_BCK = torch.bmm(W_BCD, XAt_BDK)
                dlogits_BCK = _softmax_minus_onehot(logits_BCK, onehot, others, dim=1)
            # dL/dW = (softmax - onehot) X / K; the mean over K folds into alpha.
            _write_grad(grad_BCD, dlogits_BCK, XA_BKD, 1.0 / K, W_BCD, W0_CD, cfg)
            adam_step()
            if after_epoch is not None:
                after_epoch(epoch)


def _pad_neighbours(XA_BKD, onehot_BKC, others_BKC):
    """One more neighbour column that adds nothing: zero inputs, zero one-hot and a zero mask, so
    its logits' gradient is 0 (the mean over K keeps the real K).

    Why: CPU BLAS multiplies (C, D) by (D, K) for a small odd K (5 ... 11 seen) with bits that
    depend on the matrix's position in the batch, so a point's result would depend on its chunk;
    an even K takes the position-free path.
    """
    return tuple(
        torch.cat([t, t.new_zeros(t.shape[0], 1, t.shape[2])], 1)
        for t in (XA_BKD, onehot_BKC, others_BKC)
    )


def _fused_adam(
    W: torch.Tensor,
    grad: torch.Tensor,
    cfg: TTTConfig,
    lr: float | None = None,
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Callable[[], None]:
    """A step function: one fused Adam update of W from grad, as torch.optim.Adam(fused=True).

    lr: cfg.lr unless given; moments: the (exp_avg, exp_avg_sq) buffers, zeros unless given.

    Calls the fused kernel `torch._fused_adam_` directly: the public `torch.optim.adam.adam`
    runs the same kernel with identical weights, but its Python dispatch (about 10 us a call)
    made the engine ~10% slower end to end with "sequential", which steps once per neighbour
    (benchmarks/engine_before_after.py). Where the private kernel is missing or disagrees with
    the public call (`_private_adam_ok`), the public call is used.
    """
    exp_avg, exp_avg_sq = moments or (torch.zeros_like(W), torch.zeros_like(W))
    step = torch.zeros((), dtype=torch.float32, device=W.device)
    beta1, beta2 = cfg.betas
    state = ([W], [grad], [exp_avg], [exp_avg_sq], [], [step])
    hyper = dict(
        lr=cfg.lr if lr is None else lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=cfg.eps
    )
    hyper.update(amsgrad=False, maximize=False)

    def private_step() -> None:
        step.add_(1)
        _PRIVATE_FUSED_ADAM(*state, **hyper)

    def public_step() -> None:  # adam() counts the step itself
        adam(*state, fused=True, **hyper)

    return private_step if _private_adam_ok(W.device.type, W.dtype) else public_step


_PRIVATE_FUSED_ADAM = getattr(torch, "_fused_adam_", None)
"""torch.optim.Adam(fused=True)'s kernel; private, so it may be renamed or change signature."""


@functools.cache
def _private_adam_ok(device_type: str, dtype: torch.dtype) -> bool:
    """Whether torch._fused_adam_ exists here and gives the public adam()'s weights bit for bit."""
    g = torch.Generator().manual_seed(0)
    W0, grad = torch.randn(2, 3, 17, generator=g), torch.randn(2, 3, 17, generator=g)
    runs = []
    for private in (True, False):
        W = W0.to(device_type, dtype)
        state = ([W], [grad.to(W)], [torch.zeros_like(W)], [torch.zeros_like(W)], [])
        step = torch.zeros((), dtype=torch.float32, device=W.device)
        hyper = dict(lr=0.01, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8)
        hyper.update(amsgrad=False, maximize=False)
        for _ in range(3):
            if private:
                try:
                    step.add_(1)
                    _PRIVATE_FUSED_ADAM(*state, [step], **hyper)
                except (RuntimeError, TypeError):  # TypeError also where the kernel is None
                    return False
            else:
                adam(*state, [step], fused=True, **hyper)
        runs.append(W)
    return torch.equal(*runs)


def _per_point_adam(
    W_BCD: torch.Tensor, grad_BCD: torch.Tensor, cfg: TTTConfig, lr_B: torch.Tensor
) -> Callable[[], None]:
    """A step function: Adam on W_BCD with learning rate lr_B[b] for point b, bit for bit the
    fused kernel's update at that lr (tested).

    The moments do not depend on lr, so the fused kernel updates them at lr=0, which leaves W as
    it is; the step is then the kernel's own float arithmetic, W - (step_size * m) / denom with
    denom = sqrt(v) / sqrt(1 - beta2^t) + eps and step_size = lr / (1 - beta1^t) rounded from
    float64 once. torch's float32 CPU sqrt is not correctly rounded (the kernel's is), so on CPU
    the square root is numpy's, elsewhere float64's rounded to float32 (both exact).
    """
    m_BCD, v_BCD = torch.zeros_like(W_BCD), torch.zeros_like(W_BCD)
    update_moments = _fused_adam(W_BCD, grad_BCD, cfg, lr=0.0, moments=(m_BCD, v_BCD))
    lr_B11 = lr_B.to(W_BCD.device, torch.float64)[:, None, None]
    denom_BCD, step_BCD = torch.empty_like(W_BCD), torch.empty_like(W_BCD)
    if W_BCD.device.type == "cpu":
        v_np, denom_np = v_BCD.numpy(), denom_BCD.numpy()
        exact_sqrt = lambda: np.sqrt(v_np, out=denom_np)  # noqa: E731
    else:
        exact_sqrt = lambda: denom_BCD.copy_(v_BCD.double().sqrt_())  # noqa: E731
    beta1, beta2 = cfg.betas
    t = 0

    def step() -> None:
        nonlocal t
        t += 1
        update_moments()
        step_size_B11 = (lr_B11 / (1 - beta1**t)).to(W_BCD.dtype)
        exact_sqrt()
        denom_BCD.div_(math.sqrt(1 - beta2**t)).add_(cfg.eps)
        torch.mul(m_BCD, step_size_B11, out=step_BCD).div_(denom_BCD)
        W_BCD.sub_(step_BCD)

    return step


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


def point_bytes(K: int, D: int, C: int) -> int:
    """Working memory of one test point in a chunk (float32): its neighbours' features, their
    logits and gradients, and its head with Adam's two moments and the gradient."""
    Dp = padded_width(D)
    return 4 * (K * Dp * 2 + K * C * 3 + C * Dp * 5)


def auto_chunk_size(K: int, D: int, C: int, device: torch.device | str = "cpu") -> int:
    """Test points per chunk, from the problem's shape and the device alone.

    Cache-sized on CPU (speed), in whole points per thread so no chunk needs padding (see
    `_padded_chunk`); 256 MiB of working memory on CUDA. Never from free memory: the chunk size is
    recorded with a run, and on CUDA it may matter to the last bits (see the module doc).
    """
    per_point = point_bytes(K, D, C)
    device = torch.device(device)
    budget = 256 * 2**20 if device.type == "cuda" else 4 * 2**20
    chunk = int(max(2, min(budget // per_point, 65536)))
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    return max(threads, chunk // threads * threads)


def _padded_chunk(chunk: int, device: torch.device) -> int:
    """The rows a chunk of `chunk` points is padded to: at least 2, a multiple of the CPU's threads.

    A batch of one takes BLAS's single-matrix path (other bits). torch's CPU softmax over a
    non-last axis splits its rows evenly over the threads and computes the columns at a split on a
    scalar path, so a split inside a point's rows would change that point's last bits; whole
    points per thread keep every point on the vector path, at the speed of the fused kernel.
    """
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    return -(-max(chunk, 2) // threads) * threads


def ttt_logits(
    weight_CD: torch.Tensor,
    bias_C: torch.Tensor,
    pool_x: torch.Tensor,
    pool_y: torch.Tensor,
    query_x: torch.Tensor,
    neighbours: torch.Tensor,
    cfg: TTTConfig,
    device: torch.device | str = "cpu",
    progress: bool = False,
    lr_B: torch.Tensor | None = None,
    record_epochs: Sequence[int] | None = None,
) -> torch.Tensor:
    """Logits (B x C, float32, CPU) of each query under its own head fine-tuned on its neighbours.

    neighbours: B x (k or more) pool indices, nearest first (as `KNNIndex.search` returns); the
    first cfg.k columns are used, so neighbours found once at the largest k serve every smaller k.
    cfg.chunk_size sets the test points fine-tuned together (None: `auto_chunk_size`).
    lr_B: one learning rate per query, in place of cfg.lr (see the module doc).
    record_epochs: epoch counts (each <= cfg.epochs) to record logits at, on the way to the
    largest; then the logits are (len(record_epochs), B, C), in the order given.
    """
    device = torch.device(device)
    C, D = _check_head(weight_CD, bias_C)
    pool_x = torch.from_numpy(as_matrix(pool_x, "pool_x"))
    query_x = torch.from_numpy(as_matrix(query_x, "query_x"))
    _check_width(pool_x.shape[1], D, "pool_x")
    _check_width(query_x.shape[1], D, "query_x")
    pool_y = as_class_indices(pool_y, len(pool_x), C, "pool_y")
    neighbours = _check_neighbours(neighbours, len(query_x), len(pool_x), cfg)
    chunk = cfg.chunk_size or auto_chunk_size(cfg.k, D, C, device)
    B = len(query_x)
    if lr_B is not None:
        lr_B = _check_lr_B(lr_B, B)
    epochs_E = (cfg.epochs,) if record_epochs is None else _check_epochs(record_epochs, cfg)
    run_cfg = replace(cfg, epochs=max(epochs_E))
    slot = {e: i for i, e in enumerate(epochs_E)}

    W_CD = weight_CD.detach().to(device, torch.float32)
    b_C = bias_C.detach().to(device, torch.float32)
    out_EBC = torch.empty(len(epochs_E), B, C, dtype=torch.float32)
    bar = tqdm(total=B, desc=f"ttt ({cfg.method})", unit="pt", disable=not progress, leave=False)
    for s in range(0, B, chunk):
        rows = torch.arange(s, min(s + chunk, B))
        n = len(rows)
        # Pad with copies of the last point to whole points per thread: see `_padded_chunk`.
        rows = torch.cat([rows, rows[-1].expand(_padded_chunk(n, device) - n)])
        nbr = neighbours[rows]
        X_BKD = pool_x[nbr].to(device)
        y_BK = pool_y[nbr].to(device)
        x_BD1 = query_x[rows].to(device)[:, :, None]

        record = _recorder(out_EBC[:, s : s + n], slot, x_BD1)
        lr_chunk = None if lr_B is None else lr_B[rows]
        _finetune(W_CD, b_C, X_BKD, y_BK, run_cfg, lr_chunk, record)
        bar.update(n)
    bar.close()
    bad_B = ~torch.isfinite(out_EBC).all(2).all(0)
    if bad_B.any():
        lrs = None if lr_B is None else lr_B[bad_B].unique().tolist()
        raise NonFiniteError(_diverged(int(bad_B.sum()), B, "logits", run_cfg, lrs))
    return out_EBC[0] if record_epochs is None else out_EBC


def _recorder(out_EBC: torch.Tensor, slot: dict[int, int], x_BD1: torch.Tensor) -> Record:
    """A Record writing the logits of x's first out_EBC.shape[1] points to out_EBC[slot[epochs]]."""
    n = out_EBC.shape[1]

    def record(epochs: int, W_BCD: torch.Tensor, b_BC: torch.Tensor) -> None:
        if epochs in slot:
            out_EBC[slot[epochs]] = torch.baddbmm(b_BC[:, :, None], W_BCD, x_BD1)[:n, :, 0].cpu()

    return record


def ttt_grid(
    weight_CD: torch.Tensor,
    bias_C: torch.Tensor,
    pool_x: torch.Tensor,
    pool_y: torch.Tensor,
    query_x: torch.Tensor,
    neighbours: torch.Tensor,
    cfg: TTTConfig,
    ks: Sequence[int],
    lrs: Sequence[float],
    epochs: Sequence[int],
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> torch.Tensor:
    """Logits (len(ks), len(lrs), len(epochs), B, C) of each query at each (k, lr, epochs).

    Bit-identical to one ttt_logits run per grid point, at the cost of one run per k: each query
    runs once per lr (lr_B) and records its logits at every epoch count. cfg gives the rest.
    """
    ks = _check_ints(ks, "ks", min=1)
    have = torch.as_tensor(neighbours).shape[-1]
    if max(ks) > have:
        raise ValueError(
            f"ks={ks} goes up to {max(ks)} but neighbours holds {have} per point: retrieve at "
            f"least {max(ks)} neighbours or drop the larger ks"
        )
    lr_L = _check_lr_B(lrs, None, "lrs")
    run_cfg = replace(cfg, epochs=max(_check_ints(epochs, "epochs", min=0)))
    B, L = len(query_x), len(lr_L)
    # Virtual point (l, b) = query b at lrs[l], lr-major.
    query_x = torch.as_tensor(query_x).repeat(L, 1)
    neighbours = torch.as_tensor(neighbours).repeat(L, 1)
    lr_B = lr_L.repeat_interleave(B)
    grid = []
    for k in ks:
        logits_EVC = ttt_logits(
            weight_CD, bias_C, pool_x, pool_y, query_x, neighbours, replace(run_cfg, k=k),
            device, progress, lr_B=lr_B, record_epochs=epochs,
        )  # fmt: skip
        grid.append(logits_EVC.unflatten(1, (L, B)).transpose(0, 1))
    return torch.stack(grid)


# ---- input checks: each names the argument, what it got and what is allowed ----


def _check_head(weight_CD: torch.Tensor, bias_C: torch.Tensor) -> tuple[int, int]:
    """(C, D) of a finite float head: weight (C, D) and bias (C,)."""
    if weight_CD.ndim != 2 or not weight_CD.is_floating_point():
        raise ValueError(
            f"weight_CD must be a floating-point (classes, features) matrix, got shape "
            f"{tuple(weight_CD.shape)} and dtype {weight_CD.dtype}"
        )
    C, D = weight_CD.shape
    if bias_C.shape != (C,) or not bias_C.is_floating_point():
        raise ValueError(
            f"bias_C must be a floating-point vector of {C} entries, one per row of weight_CD "
            f"{tuple(weight_CD.shape)}, got shape {tuple(bias_C.shape)} and dtype {bias_C.dtype}"
        )
    if not (torch.isfinite(weight_CD).all() and torch.isfinite(bias_C).all()):
        raise ValueError("the head's weight_CD or bias_C holds NaN or inf: fix the head first")
    return C, D


def _check_width(width: int, D: int, name: str) -> None:
    """Features of width D, the head's input width."""
    if width != D:
        raise ValueError(
            f"{name} has {width} features per row but the head's weight_CD takes {D}: pass "
            "features of the layer the head was taken from (the input of its last layer)"
        )


def _check_k(K: int, cfg: TTTConfig, name: str) -> None:
    """At least cfg.k neighbours per point."""
    if K < cfg.k:
        raise ValueError(
            f"{name} holds {K} neighbours per point but cfg.k={cfg.k}: retrieve at least k "
            f"neighbours or lower k to <= {K}"
        )


def _check_finite_rows(x: torch.Tensor, name: str, rows: str = "rows") -> None:
    """No NaN or inf in any row of a 2-D tensor."""
    bad = int((~torch.isfinite(x).all(1)).sum())
    if bad:
        raise ValueError(f"{name} has {bad} {rows} with NaN or inf: clean or drop them first")


def _check_neighbours(neighbours, n_queries: int, pool_size: int, cfg: TTTConfig) -> torch.Tensor:
    """The first cfg.k columns of a (queries, >= k) integer matrix of indices into the pool."""
    nbr = torch.as_tensor(neighbours)
    if nbr.is_floating_point() or nbr.is_complex() or nbr.dtype == torch.bool:
        raise ValueError(
            f"neighbours must hold integer pool indices, got dtype {nbr.dtype}: pass the index "
            "matrix that KNNIndex.search returns"
        )
    if nbr.ndim != 2 or nbr.shape[0] != n_queries:
        raise ValueError(
            f"neighbours has shape {tuple(nbr.shape)} but query_x has {n_queries} rows: pass one "
            "row of neighbour indices per query, shape (queries, k)"
        )
    _check_k(nbr.shape[1], cfg, "neighbours")
    nbr = nbr[:, : cfg.k].long()
    lo, hi = int(nbr.min()), int(nbr.max())
    if lo < 0 or hi >= pool_size:
        wrong = int(((nbr < 0) | (nbr >= pool_size)).sum())
        raise ValueError(
            f"neighbours holds {wrong} indices outside the pool (range [{lo}, {hi}], pool has "
            f"{pool_size} rows): indices must lie in [0, {pool_size}); -1 is what a search "
            "returns where it found fewer than k neighbours"
        )
    return nbr


def _check_ints(values, name: str, min: int) -> tuple[int, ...]:
    """A non-empty sequence of distinct integers >= min."""
    values = tuple(torch.as_tensor(values).reshape(-1).tolist()) if _is_array(values) else values
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{name} must be a non-empty sequence of integers, got {values!r}")
    for i, value in enumerate(values):
        check_int(value, f"{name}[{i}]", min=min)
    if len(set(values)) < len(values):
        twice = sorted({v for v in values if values.count(v) > 1})
        raise ValueError(f"{name}={tuple(values)} repeats {twice}: give each value once")
    return tuple(int(v) for v in values)


def _check_epochs(record_epochs, cfg: TTTConfig) -> tuple[int, ...]:
    """Distinct epoch counts in [0, cfg.epochs]."""
    epochs = _check_ints(record_epochs, "record_epochs", min=0)
    if max(epochs) > cfg.epochs:
        raise ValueError(
            f"record_epochs={epochs} goes past cfg.epochs={cfg.epochs}: raise cfg.epochs to "
            f"{max(epochs)} or record at most {cfg.epochs} epochs"
        )
    return epochs


def _check_lr_B(lr_B, B: int | None, name: str = "lr_B") -> torch.Tensor:
    """Learning rates as a float64 vector of B (any number if None) finite values > 0.

    Python floats stay float64 (as cfg.lr): torch would round a list of them to float32.
    """
    lr = lr_B if _is_array(lr_B) else torch.as_tensor(lr_B, dtype=torch.float64)
    lr = torch.as_tensor(lr)
    if lr.is_complex() or lr.dtype == torch.bool:
        raise ValueError(f"{name} must hold real learning rates, got dtype {lr.dtype}")
    want = "one per query" if B is not None else "at least one"
    if lr.ndim != 1 or (B is not None and len(lr) != B) or len(lr) == 0:
        raise ValueError(
            f"{name} has shape {tuple(lr.shape)}: pass a vector of learning rates, {want}"
            + (f" ({B},)" if B is not None else "")
        )
    lr = lr.detach().cpu().double()
    bad = ~torch.isfinite(lr) | (lr <= 0)
    if bad.any():
        raise ValueError(
            f"{name} must hold finite learning rates > 0, got {int(bad.sum())} others (first: "
            f"{lr[bad][0].item()!r} at index {int(bad.nonzero()[0, 0])})"
        )
    return lr


def _is_array(values) -> bool:
    return isinstance(values, (torch.Tensor, np.ndarray))


def _diverged(bad: int, B: int, what: str, cfg: TTTConfig, lrs: list[float] | None = None) -> str:
    lr = f"lr={cfg.lr}" if lrs is None else f"lr in {lrs[:5]}" + (" ..." if len(lrs) > 5 else "")
    return (
        f"{bad} of {B} test points got NaN or inf {what}: fine-tuning diverged with {lr}, "
        f"l2={cfg.l2}, epochs={cfg.epochs}; lower lr or add an l2 pull toward the global weights"
    )
