"""The paper's sparse-concept model as a seeded generator (arXiv 2509.24510, Section 3).

    sim = Sim(d1=1000, s=8, d2=100, tightness=1.0)    # validated on construction
    draw = generate(sim)                              # train and test points, A, the true heads
    draw.train.psi_ND, draw.train.y_NT                # features and noisy targets

Each input x activates s of d1 concepts: Phi(x) is s-sparse. Its features are a random projection
Psi(x) = A Phi(x) (+ optional feature noise) with d2 < d1 (superposition); the truth is linear in
the concepts, f(x) = <Phi(x), w*> with T independent heads w* (the columns of W*), observed with
Gaussian noise sigma. Classification labels are argmax over C = T heads of the noisy scores.

How inputs share concepts: points belong to `clusters` clusters; each cluster owns
`cluster_concepts` concepts (default s) with a fixed sign each. A point draws round(tightness * s)
of its concepts from its cluster's set and the rest from all other concepts, with fresh signs:
tightness 0 is independent inputs, 1 is tight clusters whose members share their whole support.
A concept's value is its sign times (1 + jitter * N(0, 1)), so members of a cluster lie close in
concept space and, A being near-isometric on sparse vectors, in feature space too.

Population facts the estimators are checked against: every concept is equally likely active and
values have random signs, so Cov(Phi) = (s/d1)(1 + jitter^2) I; the heads are scaled so that the
signal has variance 1 per output; so sigma is the noise's std in units of the signal's.

Shape suffixes: N points, M = d1 concepts, D = d2 features, T outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from tttlab.theory.config import Sim


@dataclass(frozen=True)
class Points:
    """One split of a draw: concepts, features, targets and clusters of N points."""

    phi_NM: sp.csr_matrix
    """True concepts, s non-zeros per row (float64)."""
    psi_ND: np.ndarray
    """Features A Phi (+ noise), float64."""
    f_NT: np.ndarray
    """Noise-free signal <Phi, w*> per output."""
    y_NT: np.ndarray
    """Observed targets f + sigma * noise (regression), or the same noisy scores whose argmax is
    the label (classification)."""
    cluster_N: np.ndarray
    """Each point's cluster."""

    @property
    def labels_N(self) -> np.ndarray:
        """Class labels: argmax of the noisy scores (the classification task's targets)."""
        return self.y_NT.argmax(1)

    @property
    def true_class_N(self) -> np.ndarray:
        """Argmax of the noise-free signal: a label even for regression draws."""
        return self.f_NT.argmax(1)


@dataclass(frozen=True)
class Draw:
    """A generated problem: the settings, the projection A, the true heads and both splits."""

    sim: Sim
    A_DM: np.ndarray
    W_MT: np.ndarray
    train: Points
    test: Points


def generate(sim: Sim) -> Draw:
    """Draw the training and test points of `sim` (same clusters, same A and heads). Seeded."""
    rng = np.random.default_rng([sim.seed, 2509])
    n = sim.n_train + sim.n_test
    m = sim.shared
    sets_CM = np.stack([rng.choice(sim.d1, m, replace=False) for _ in range(sim.clusters)])
    signs_CM = rng.choice([-1.0, 1.0], size=(sim.clusters, m))
    cluster_N = np.concatenate(
        [rng.permutation(sim.n_train) % sim.clusters, rng.integers(0, sim.clusters, sim.n_test)]
    )
    idx_NS, sign_NS = _supports(rng, sim, sets_CM, signs_CM, cluster_N)
    val_NS = sign_NS * (1.0 + sim.jitter * rng.standard_normal(idx_NS.shape))
    rows = np.repeat(np.arange(n), sim.s)
    phi = sp.csr_matrix((val_NS.ravel(), (rows, idx_NS.ravel())), shape=(n, sim.d1))

    A_DM = rng.standard_normal((sim.d2, sim.d1)) / math.sqrt(sim.d2)
    if sim.normalise_rows:
        A_DM *= math.sqrt(sim.d1 / sim.d2) / np.linalg.norm(A_DM, axis=1, keepdims=True)
    psi = np.asarray(phi @ A_DM.T)
    if sim.feature_noise > 0:
        feature_std = math.sqrt(sim.s * (1 + sim.jitter**2) / sim.d1) * np.linalg.norm(A_DM, axis=1)
        psi += sim.feature_noise * feature_std * rng.standard_normal(psi.shape)
    # Var f = s E[v^2] E[w^2] = 1 per output.
    W_MT = rng.standard_normal((sim.d1, sim.outputs)) / math.sqrt(sim.s * (1 + sim.jitter**2))
    f = np.asarray(phi @ W_MT)
    y = f + sim.sigma * rng.standard_normal(f.shape)

    def split(sl: slice) -> Points:
        return Points(phi[sl], psi[sl], f[sl], y[sl], cluster_N[sl])

    return Draw(sim, A_DM, W_MT, split(slice(0, sim.n_train)), split(slice(sim.n_train, n)))


def _supports(
    rng: np.random.Generator,
    sim: Sim,
    sets_CM: np.ndarray,
    signs_CM: np.ndarray,
    cluster_N: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(concept indices, signs), N x s: round(tightness * s) from the point's cluster's set (with
    the cluster's signs), the rest from the concepts not yet chosen (fresh signs)."""
    n, s = len(cluster_N), sim.s
    own = round(sim.tightness * s)
    # A random order of the cluster's set per point: its first `own` entries are the shared part.
    order_NM = rng.random((n, sets_CM.shape[1])).argsort(1)[:, :own]
    idx = np.empty((n, s), dtype=np.int64)
    sign = rng.choice([-1.0, 1.0], size=(n, s))
    idx[:, :own] = np.take_along_axis(sets_CM[cluster_N], order_NM, 1)
    sign[:, :own] = np.take_along_axis(signs_CM[cluster_N], order_NM, 1)
    if own < s:
        idx[:, own:] = _distinct_extra(rng, idx[:, :own], s - own, sim.d1)
    return idx, sign


def _distinct_extra(rng: np.random.Generator, taken_NJ: np.ndarray, extra: int, d1: int):
    """`extra` concepts per row, distinct from each other and from the row's `taken` ones."""
    n = len(taken_NJ)
    if (taken_NJ.shape[1] + extra) * 4 > d1:  # dense supports: rank random keys (n x d1)
        keys = rng.random((n, d1))
        np.put_along_axis(keys, taken_NJ, np.inf, 1)
        return np.argpartition(keys, extra - 1, axis=1)[:, :extra]
    # Sparse supports: draw with replacement and redraw the few rows with a repeat.
    out = np.empty((n, extra), dtype=np.int64)
    redo = np.arange(n)
    while len(redo):
        out[redo] = rng.integers(0, d1, (len(redo), extra))
        both = np.sort(np.concatenate([taken_NJ[redo], out[redo]], 1), 1)
        redo = redo[(both[:, 1:] == both[:, :-1]).any(1)]
    return out
