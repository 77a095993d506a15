"""SIFT's selection rule, batched: for each query, choose k of its K candidates greedily so that the
posterior variance of the query's response falls fastest (Hubotter et al., "Efficiently Learning at
Test-Time: Active Fine-Tuning of LLMs", ICLR 2025; reference implementation: PyPI `activeft`).

The model is a Gaussian process with the linear kernel k(x, x') = <x, x'> and observation noise
lambda. Choosing candidate c after the chosen set S lowers the query's variance by
cov_S(x, c)^2 / (var_S(c) + lambda), so each step takes the candidate with the largest such drop;
a candidate may be chosen again (it is then observed twice), as in `activeft`. The posterior is
kept as a low-rank update of the prior, u_1 .. u_t in feature space (P = I - sum u u^T), so a step
costs O(K D + t D) per query and every query of a chunk steps at once.

Exact and deterministic: float64 throughout, ties go to the nearer candidate (lower position), and
a query's choice never depends on the other queries of its chunk (tested).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from tttlab.checks import check_int, check_number

CHUNK_BYTES = 2**22
"""Cap of the float64 candidate rows (B x K x D) stepped at once: small, so they stay in cache."""


class SiftSelection(NamedTuple):
    """What `sift_select` returns."""

    positions: np.ndarray
    """B x k positions into each query's candidates, in the order chosen (repeats possible)."""
    variance: np.ndarray
    """B: the query's posterior variance after its k choices (its prior variance is |x|^2)."""


def sift_select(
    queries_BD: np.ndarray | torch.Tensor,
    candidates_BKD: np.ndarray | torch.Tensor,
    k: int,
    noise: float,
) -> SiftSelection:
    """Choose k of each query's K candidates by SIFT's greedy rule with noise variance `noise`.

    Candidates are ordered nearest first, so that ties go to the nearest; the kernel is the plain
    inner product of the rows as given (unit-normalise them first for the paper's setting).
    """
    q = np.asarray(queries_BD, dtype=np.float64)
    c = np.asarray(candidates_BKD, dtype=np.float64)
    if q.ndim != 2 or c.ndim != 3 or c.shape[0] != q.shape[0] or c.shape[2] != q.shape[1]:
        raise ValueError(
            f"queries must be (B, D) and candidates (B, K, D) with the same B and D, got "
            f"{q.shape} and {c.shape}"
        )
    check_int(k, "k", min=1)
    check_number(noise, "noise", min=0, strict_min=True)
    B, K, D = c.shape
    positions = np.empty((B, k), dtype=np.int64)
    variance = np.empty(B, dtype=np.float64)
    step = max(1, CHUNK_BYTES // (8 * (K + k) * D))
    for s in range(0, B, step):
        e = min(s + step, B)
        positions[s:e], variance[s:e] = _select_chunk(q[s:e], c[s:e], k, float(noise))
    return SiftSelection(positions, variance)


def _select_chunk(
    q_BD: np.ndarray, C_BKD: np.ndarray, k: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Stacked matrix-vector products (numpy's matmul, one BLAS call per query, so a query's
    bits never depend on its chunk) and element-wise updates, k steps for the whole chunk."""
    B, K, D = C_BKD.shape
    C_BKD = np.ascontiguousarray(C_BKD)
    rows = np.arange(B)
    cov_BK = np.matmul(C_BKD, q_BD[:, :, None])[..., 0]  # cov(x, c) under the current posterior
    var_BK = np.einsum("bkd,bkd->bk", C_BKD, C_BKD)  # var(c)
    var_B = np.einsum("bd,bd->b", q_BD, q_BD)  # var(x)
    U_BTD = np.zeros((B, k, D))  # u_1 .. u_t as rows: P = I - U^T U
    pos_BT = np.empty((B, k), dtype=np.int64)
    for t in range(k):
        drop_BK = np.square(cov_BK) / (np.maximum(var_BK, 0) + noise)
        j_B = drop_BK.argmax(1)  # the first of equal drops: the nearest candidate
        pos_BT[:, t] = j_B
        c_BD1 = C_BKD[rows, j_B][:, :, None]
        if t:  # P c = c - U^T (U c): the chosen row under the current posterior
            U = U_BTD[:, :t]
            c_BD1 = c_BD1 - np.matmul(U.transpose(0, 2, 1), np.matmul(U, c_BD1))
        scale_B = 1 / np.sqrt(np.maximum(var_BK[rows, j_B], 0) + noise)
        u_BD1 = c_BD1 * scale_B[:, None, None]
        U_BTD[:, t] = u_BD1[..., 0]
        w_BK = np.matmul(C_BKD, u_BD1)[..., 0]  # <c, u> for every candidate
        a_B = cov_BK[rows, j_B] * scale_B  # <x, u>
        cov_BK -= a_B[:, None] * w_BK
        var_BK -= np.square(w_BK)
        var_B -= np.square(a_B)
    return pos_BT, np.maximum(var_B, 0)


def posterior_variance(
    queries_BD: np.ndarray | torch.Tensor,
    observed_BKD: np.ndarray | torch.Tensor,
    noise: float,
) -> np.ndarray:
    """Each query's posterior variance (B,) after observing its K rows with noise variance
    `noise`, under the linear kernel: SIFT's estimate of what a neighbourhood leaves unknown."""
    q = torch.as_tensor(queries_BD).to(torch.float64)
    X = torch.as_tensor(observed_BKD).to(torch.float64)
    check_number(noise, "noise", min=0, strict_min=True)
    B, K, D = X.shape
    out = np.empty(B)
    step = max(1, CHUNK_BYTES // (8 * (K + min(K, D)) * max(K, D)))
    for s in range(0, B, step):
        x_BD, X_BKD = q[s : s + step], X[s : s + step]
        if K <= D:  # |x|^2 - s^T (X X^T + noise I)^-1 s, with s = X x
            s_BK = (X_BKD * x_BD[:, None, :]).sum(-1)
            G_BKK = X_BKD @ X_BKD.transpose(1, 2) + noise * torch.eye(K, dtype=torch.float64)
            sol = torch.cholesky_solve(s_BK[..., None], torch.linalg.cholesky(G_BKK))[..., 0]
            v = (x_BD * x_BD).sum(-1) - (s_BK * sol).sum(-1)
        else:  # noise x^T (X^T X + noise I)^-1 x: the same number in feature space
            A_BDD = X_BKD.transpose(1, 2) @ X_BKD + noise * torch.eye(D, dtype=torch.float64)
            sol = torch.cholesky_solve(x_BD[..., None], torch.linalg.cholesky(A_BDD))[..., 0]
            v = noise * (x_BD * sol).sum(-1)
        out[s : s + len(x_BD)] = v.clamp_min(0).numpy()
    return out
