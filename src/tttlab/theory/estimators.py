"""The estimators the theory compares, on one draw of the sparse-concept model.

    draw = generate(Sim())
    result = evaluate(draw, k=64)     # every estimator's error, the neighbourhoods' make-up
    result["err_global"], result["err_ttt"], result["err_concept_ttt"], result["err_oracle"]

- global: one least-squares head (a little ridge, `RIDGE`) on the features Psi, fitted on all
  training points. Its error cannot fall below 1 - d2/d1 when A is a random projection.
- ttt: per test point, the global head fine-tuned on its k nearest training points in Psi-space:
  a ridge fit of the global head's residuals on the neighbours (with a local intercept): least
  squares on the subspace the neighbours span, the global head elsewhere. Many small problems
  are solved at once with batched linear algebra.
- concept_ttt: the same local fit on the true concepts Phi of the neighbours, from zero: it can
  use only the concepts active in the neighbourhood (the theory's local estimator).
- oracle: the least-squares head on the true concepts Phi, fitted on all training points.

Regression errors are excess errors relative to the signal's variance, mean((pred - f)^2) /
var(f) against the noise-free f, averaged over outputs: the theory's normalisation, and noise
neither inflates nor hides them. Classification errors are 1 - accuracy on the noisy test labels;
there the global head is tttlab's trained linear head and TTT is tttlab's batched engine.

Shape suffixes: N training points, B test points, K neighbours, D features, T outputs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import torch
from threadpoolctl import ThreadpoolController

from tttlab.checks import check_int, check_number
from tttlab.methods import GlobalHead, TTTClassifier
from tttlab.retrieval import KNNIndex
from tttlab.theory.concepts import Draw, Points
from tttlab.theory.config import RIDGE, Sim

_CHUNK_FLOATS = 2**22
"""Floats (float64: 32 MB) of gathered neighbours per chunk of test points."""


@dataclass(frozen=True)
class Head:
    """A linear head with an intercept: X @ w_DT + b_T."""

    w_DT: np.ndarray
    b_T: np.ndarray

    def __call__(self, X: np.ndarray | sp.spmatrix) -> np.ndarray:
        return np.asarray(X @ self.w_DT) + self.b_T


def ridge_head(X: np.ndarray | sp.spmatrix, y_NT: np.ndarray, ridge: float = RIDGE) -> Head:
    """Least squares (with `ridge`) of y on X with an intercept, by the normal equations in
    float64; X may be a scipy sparse matrix (the true concepts)."""
    n = X.shape[0]
    mu_D = np.asarray(X.mean(0)).ravel()
    G_DD = X.T @ X
    G_DD = (G_DD.toarray() if sp.issparse(G_DD) else G_DD) - n * np.outer(mu_D, mu_D)
    ym_T = y_NT.mean(0)
    c_DT = np.asarray(X.T @ y_NT) - n * np.outer(mu_D, ym_T)
    lam = ridge * max(np.trace(G_DD), 1e-300) / n
    w_DT = scipy.linalg.solve(G_DD + lam * np.eye(len(G_DD)), c_DT, assume_a="pos")
    return Head(w_DT, ym_T - mu_D @ w_DT)


def local_ridge(
    pool_X: np.ndarray | sp.csr_matrix,
    pool_r_NT: np.ndarray,
    query_X: np.ndarray | sp.csr_matrix,
    neighbours_BK: np.ndarray,
    ridge: float = RIDGE,
) -> np.ndarray:
    """Per query b, a ridge fit (with intercept) of r on X over its K neighbours, evaluated at the
    query; B x T. Solved in the dual (K x K) when K <= D, else the primal (D x D), in float64."""
    B, K = neighbours_BK.shape
    D = pool_X.shape[1]
    out_BT = np.empty((B, pool_r_NT.shape[1]))
    step = max(1, _CHUNK_FLOATS // (K * D))
    for s in range(0, B, step):
        nbr = neighbours_BK[s : s + step]
        X_BKD = _rows(pool_X, nbr.ravel()).reshape(len(nbr), K, D)
        q_BD = _rows(query_X, np.arange(s, s + len(nbr)))
        out_BT[s : s + len(nbr)] = _solve_local(X_BKD, pool_r_NT[nbr], q_BD, ridge)
    return out_BT


def _rows(X: np.ndarray | sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Dense float64 rows of X (a sparse matrix's rows are densified)."""
    picked = X[rows]
    return np.asarray(picked.toarray() if sp.issparse(picked) else picked, dtype=np.float64)


def _solve_local(
    X_BKD: np.ndarray, r_BKT: np.ndarray, q_BD: np.ndarray, ridge: float
) -> np.ndarray:
    """The centred ridge fits of `local_ridge`, B at once, evaluated at the queries. Products by
    torch's bmm (numpy's stacked matmul crawls on transposed views), solves by `_solve`."""
    K, D = X_BKD.shape[1:]
    xm_BD, rm_BT = X_BKD.mean(1), r_BKT.mean(1)
    Xc_BKD = torch.from_numpy(X_BKD - xm_BD[:, None])
    rc_BKT = torch.from_numpy(r_BKT - rm_BT[:, None])
    q_BD1 = torch.from_numpy(q_BD - xm_BD)[:, :, None]
    lam_B = ridge * np.maximum((Xc_BKD**2).sum((1, 2)).numpy(), 1e-300) / K
    if K <= D:
        G_BKK = torch.bmm(Xc_BKD, Xc_BKD.transpose(1, 2)).numpy()
        G_BKK[:, np.arange(K), np.arange(K)] += lam_B[:, None]
        alpha_BKT = torch.from_numpy(_solve(G_BKK, rc_BKT.numpy()))
        k_B1K = torch.bmm(Xc_BKD, q_BD1).transpose(1, 2)
        return rm_BT + torch.bmm(k_B1K, alpha_BKT)[:, 0].numpy()
    G_BDD = torch.bmm(Xc_BKD.transpose(1, 2), Xc_BKD).numpy()
    G_BDD[:, np.arange(D), np.arange(D)] += lam_B[:, None]
    w_BDT = _solve(G_BDD, torch.bmm(Xc_BKD.transpose(1, 2), rc_BKT).numpy())
    return rm_BT + torch.bmm(q_BD1.transpose(1, 2), torch.from_numpy(w_BDT))[:, 0].numpy()


def _solve(A_BNN: np.ndarray, b_BNT: np.ndarray) -> np.ndarray:
    """numpy's batched solve on one BLAS thread: torch's batched solve is many times slower on
    small CPU systems, and numpy's threaded one fights torch's OpenMP threads (10-100x slower)."""
    with _blas().limit(limits=1, user_api="blas"):
        return np.linalg.solve(A_BNN, b_BNT)


@functools.cache
def _blas() -> ThreadpoolController:
    """The process's BLAS thread pools, found once (looking them up costs milliseconds)."""
    return ThreadpoolController()


def concept_ridge(train: Points, test: Points, neighbours_BK: np.ndarray, ridge: float = RIDGE):
    """`local_ridge` on the true concepts, each point's fit using only the concepts active in its
    neighbourhood (and its own, which get zero weight when no neighbour has them); B x T."""
    B, K = neighbours_BK.shape
    s = train.phi_NM.nnz // train.phi_NM.shape[0]
    sup_NS, val_NS = _sparse_rows(train.phi_NM, s)
    qsup_BS, qval_BS = _sparse_rows(test.phi_NM, s)
    flat_BJ = np.concatenate([sup_NS[neighbours_BK].reshape(B, K * s), qsup_BS], 1)
    col_BJ = _local_columns(flat_BJ)
    U = int(col_BJ.max()) + 1  # concepts in the widest neighbourhood
    out_BT = np.empty((B, train.y_NT.shape[1]))
    step = max(1, _CHUNK_FLOATS // (K * U))
    for a in range(0, B, step):
        nbr, col = neighbours_BK[a : a + step], col_BJ[a : a + step]
        b = len(nbr)
        X_BKU = np.zeros((b, K, U))
        rows_B1, rows_BK1 = np.arange(b)[:, None], np.arange(K)[None, :, None]
        X_BKU[rows_B1[:, :, None], rows_BK1, col[:, : K * s].reshape(b, K, s)] = val_NS[nbr]
        q_BU = np.zeros((b, U))
        q_BU[rows_B1, col[:, K * s :]] = qval_BS[a : a + b]
        out_BT[a : a + b] = _solve_local(X_BKU, train.y_NT[nbr], q_BU, ridge)
    return out_BT


def _sparse_rows(phi_NM: sp.csr_matrix, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(concept indices, values), N x s, of a matrix with s non-zeros per row."""
    return phi_NM.indices.reshape(-1, s), phi_NM.data.reshape(-1, s)


def _local_columns(flat_BJ: np.ndarray) -> np.ndarray:
    """Each entry's rank among its row's distinct values: the row's concepts renumbered 0, 1, ..."""
    order = np.argsort(flat_BJ, 1, kind="stable")
    ordered = np.take_along_axis(flat_BJ, order, 1)
    new = np.ones(ordered.shape, dtype=np.int64)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    col = np.empty_like(new)
    np.put_along_axis(col, order, np.cumsum(new, 1) - 1, 1)
    return col


def neighbours(draw: Draw, k: int) -> np.ndarray:
    """The k nearest training points of each test point in feature space (B x k, nearest first),
    by tttlab's kNN wrapper (exact search)."""
    check_k(k, draw.sim)
    return KNNIndex().fit(draw.train.psi_ND).search(draw.test.psi_ND, k)[1]


def check_k(k: int, sim: Sim) -> None:
    """k neighbours must exist in the training pool."""
    check_int(k, "k", min=1)
    if k > sim.n_train:
        raise ValueError(
            f"k={k} is larger than the number of training points (n_train={sim.n_train}): "
            f"choose k <= {sim.n_train}, or draw more points"
        )


def relative_error(pred_BT: np.ndarray, f_BT: np.ndarray) -> float:
    """Mean squared error against the noise-free signal over its variance, averaged over
    outputs."""
    return float(np.mean(((pred_BT - f_BT) ** 2).mean(0) / f_BT.var(0)))


def global_theory(sim: Sim) -> float:
    """The global head's error floor on isotropic concepts: 1 - d2/d1 (0 once d2 >= d1)."""
    return max(0.0, 1 - sim.d2 / sim.d1)


def ttt_theory(sim: Sim, k: int) -> float:
    """The theory's TTT rate, sigma^2 s log(d1/s) / k (an order of magnitude: no constant)."""
    return sim.sigma**2 * sim.s * math.log(sim.d1 / sim.s) / k


def evaluate(
    draw: Draw, k: int, ridge: float = RIDGE, nbr_BK: np.ndarray | None = None
) -> dict[str, Any]:
    """Every estimator's error on `draw` at k neighbours, the theory's predictions beside them, and
    what the neighbourhoods hold. `nbr_BK`: neighbours found already (at least k per point)."""
    check_k(k, draw.sim)
    check_number(ridge, "ridge", min=0, strict_min=True)
    if nbr_BK is None:
        nbr_BK = neighbours(draw, k)
    nbr_BK = nbr_BK[:, :k]
    sim, train, test = draw.sim, draw.train, draw.test
    row: dict[str, Any] = {}
    if sim.task == "regression":
        head = ridge_head(train.psi_ND, train.y_NT, ridge)
        residual_NT = train.y_NT - head(train.psi_ND)
        ttt_BT = head(test.psi_ND) + local_ridge(
            train.psi_ND, residual_NT, test.psi_ND, nbr_BK, ridge
        )
        concept_BT = concept_ridge(train, test, nbr_BK, ridge)
        oracle = ridge_head(train.phi_NM, train.y_NT, ridge)
        row |= {
            "err_global": relative_error(head(test.psi_ND), test.f_NT),
            "err_ttt": relative_error(ttt_BT, test.f_NT),
            "err_concept_ttt": relative_error(concept_BT, test.f_NT),
            "err_oracle": relative_error(oracle(test.phi_NM), test.f_NT),
            "theory_global": global_theory(sim),
            "theory_ttt": ttt_theory(sim, k),
        }
    else:
        row |= classification_errors(draw, k, nbr_BK)
    return row | neighbourhood(train, test, nbr_BK, sim)


def classification_errors(draw: Draw, k: int, nbr_BK: np.ndarray) -> dict[str, Any]:
    """1 - accuracy of tttlab's global linear head on Psi, of TTT by tttlab's batched engine
    (fine-tuning that head on each point's k neighbours), and of a linear head on the true Phi."""
    train, test = draw.train, draw.test
    psi_train = train.psi_ND.astype(np.float32)
    glob = GlobalHead(random_state=draw.sim.seed).fit(psi_train, train.labels_N)
    ttt = TTTClassifier(head=glob.head_, k=k).fit(psi_train, train.labels_N)
    psi_test = test.psi_ND.astype(np.float32)
    oracle = GlobalHead(random_state=draw.sim.seed).fit(
        train.phi_NM.toarray().astype(np.float32), train.labels_N
    )
    labels = test.labels_N
    return {
        "err_global": float(np.mean(glob.predict(psi_test) != labels)),
        "err_ttt": float(np.mean(ttt.predict(psi_test, neighbours=nbr_BK) != labels)),
        "err_oracle": float(
            np.mean(oracle.predict(test.phi_NM.toarray().astype(np.float32)) != labels)
        ),
        "err_bayes": float(np.mean(test.true_class_N != labels)),
    }


def neighbourhood(train: Points, test: Points, nbr_BK: np.ndarray, sim: Sim) -> dict[str, float]:
    """What the k neighbourhoods hold: the share in the test point's own cluster, the share of its
    concepts each neighbour shares, the concepts active across the neighbourhood, and the share
    with the test point's label (argmax of the signal for regression) beside chance (two random
    training points' agreement)."""
    s = sim.s
    sup_test, _ = _sparse_rows(test.phi_NM, s)
    sup_train, _ = _sparse_rows(train.phi_NM, s)
    shared, local = [], []
    step = max(1, 2**22 // (nbr_BK.shape[1] * s * s))
    for a in range(0, len(nbr_BK), step):
        nbr = nbr_BK[a : a + step]
        mine_BS, theirs_BKS = sup_test[a : a + step], sup_train[nbr]
        hits = mine_BS[:, None, :, None] == theirs_BKS[:, :, None, :]
        shared.append(hits.sum((2, 3)).mean(1) / s)
        every = np.sort(theirs_BKS.reshape(len(nbr), -1), 1)
        local.append(1 + (every[:, 1:] != every[:, :-1]).sum(1))
    if sim.task == "classification":
        own, theirs = test.labels_N, train.labels_N[nbr_BK]
    else:
        own, theirs = test.true_class_N, train.true_class_N[nbr_BK]
    distinct = [len(np.unique(row)) for row in theirs]
    _, counts = np.unique(train.labels_N if sim.task == "classification" else train.true_class_N,
                          return_counts=True)  # fmt: skip
    return {
        "same_cluster": float(np.mean(train.cluster_N[nbr_BK] == test.cluster_N[:, None])),
        "shared_concepts": float(np.mean(np.concatenate(shared))),
        "local_concepts": float(np.mean(np.concatenate(local))),
        "label_agreement": float(np.mean(theirs == own[:, None])),
        "label_chance": float(((counts / counts.sum()) ** 2).sum()),
        "distinct_labels": float(np.mean(distinct)),
    }
