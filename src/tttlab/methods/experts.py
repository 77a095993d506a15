"""The paper's mixture of experts: test-time training amortised over k-means cells.

Fit clusters the training features with k-means, fine-tunes one copy of the head's last layer per
centroid on the k training points nearest to it, and predicts each test point with the expert of
its nearest centroid. One expert is the global head tuned near the data mean; one expert per
training point is TTT done at the nearest training point instead of at the test point.

The paper's script calls scipy's `kmeans(features, n, iter=20)`, where iter counts restarts (each
run to convergence, the one of least distortion kept) and empty clusters are dropped. Here each
run is FAISS's seeded k-means of `kmeans_iter` Lloyd iterations; `kmeans_restarts` runs are made
(seeds random_state, random_state + 1, ...) and the one of least distortion (scipy's: the mean
Euclidean distance to the nearest centroid) kept; centroids nearest to no training point are
dropped, so there may be fewer experts than n_experts (`n_experts_` says how many).
"""

from __future__ import annotations

import faiss
import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn
from tqdm.auto import tqdm

from tttlab.checks import check_int
from tttlab.methods.base import (
    Classifier,
    check_k,
    fit_head,
    model_features,
    ttt_config,
    validate_X,
)
from tttlab.models import TrainConfig
from tttlab.models.heads import head_parts
from tttlab.retrieval import KNNIndex
from tttlab.tensors import check_device
from tttlab.ttt import TTTConfig, auto_chunk_size, finetune

MAX_SEED = 2**31 - 1
"""FAISS keeps the k-means seed in a C int."""


class ExpertsClassifier(Classifier):
    """Mixture of experts: per k-means centroid of the training features, the head's last layer
    fine-tuned on the centroid's k nearest training points; a test point uses its nearest
    centroid's expert.

    head: as in TTTClassifier (None trains a LinearHead in fit with the train_* settings).
    n_experts: k-means centroids, 1 to the number of training points. k, epochs, lr, method, l2:
    TTTConfig's, per expert. kmeans_iter: Lloyd iterations of each FAISS k-means run, seeded by
    random_state; kmeans_restarts: runs, the least distortion kept (see the module docstring).
    device: where the experts are fine-tuned. Predict methods accept `neighbours` and ignore it
    (one call shape for all).

    Learned: centroids_ (E, D), E = n_experts_ <= n_experts, kmeans_distortion_, expert_neighbours_
    (E, k) training indices, coef_ (E, C, D) and intercept_ (E, C), the experts' last layers on
    the head's features; router_ finds centroids.
    """

    def __init__(
        self,
        head: nn.Module | None = None,
        n_experts: int = 100,
        k: int = TTTConfig.k,
        epochs: int = TTTConfig.epochs,
        lr: float = TTTConfig.lr,
        method: str = TTTConfig.method,
        l2: float = TTTConfig.l2,
        kmeans_iter: int = 20,
        kmeans_restarts: int = 1,
        device: str = "cpu",
        progress: bool = False,
        train_stop: str = TrainConfig.stop,
        train_epochs: int = TrainConfig.epochs,
        train_lr: float = TrainConfig.lr,
        train_batch_size: int = TrainConfig.batch_size,
        random_state: int = 0,
    ):
        self.head = head
        self.n_experts = n_experts
        self.k = k
        self.epochs = epochs
        self.lr = lr
        self.method = method
        self.l2 = l2
        self.kmeans_iter = kmeans_iter
        self.kmeans_restarts = kmeans_restarts
        self.device = device
        self.progress = progress
        self.train_stop = train_stop
        self.train_epochs = train_epochs
        self.train_lr = train_lr
        self.train_batch_size = train_batch_size
        self.random_state = random_state

    @property
    def config(self) -> TTTConfig:
        """Each expert's fine-tuning as the engine takes it (validated on construction)."""
        return ttt_config(self)

    def fit(self, X, y) -> ExpertsClassifier:
        """Cluster the training features, then fine-tune one expert per centroid; when head is
        None, first train a linear head on (X, y)."""
        check_int(self.n_experts, "n_experts", min=1)
        check_int(self.k, "k", min=1)
        check_int(self.kmeans_iter, "kmeans_iter", min=1)
        check_int(self.kmeans_restarts, "kmeans_restarts", min=1)
        check_int(self.random_state, "random_state", min=0)
        if self.random_state + self.kmeans_restarts - 1 > MAX_SEED:
            raise ValueError(
                f"random_state={self.random_state} is too large for FAISS's k-means seeds "
                f"(one per restart): choose 0 <= random_state <= "
                f"{MAX_SEED - self.kmeans_restarts + 1}"
            )
        cfg = self.config  # TTTConfig validates the other hyper-parameters before any work
        check_device(self.device)
        device = torch.device(self.device)
        X, y = validate_X(self, X, y, model=self.head, reset=True)
        if self.n_experts > len(X):
            raise ValueError(
                f"n_experts={self.n_experts} is more than the training set has points "
                f"(n_samples={len(X)}), and each expert needs a centroid: "
                f"choose n_experts <= {len(X)}"
            )
        check_k(self.k, len(X))
        self.head_, self.classes_, y_idx = fit_head(self, X, y, self.progress)
        pool_ND = model_features(self.head_, X, "X")
        self.centroids_ = self._kmeans(pool_ND.numpy())
        self.n_experts_ = len(self.centroids_)
        # Exact, re-ranked in float64 with ties by index: neighbours never depend on batching.
        _, self.expert_neighbours_ = (
            KNNIndex().fit(pool_ND).search(self.centroids_, self.k, progress=self.progress)
        )
        self.coef_, self.intercept_ = self._finetune(pool_ND, torch.from_numpy(y_idx), cfg, device)
        self.router_ = KNNIndex().fit(self.centroids_)
        return self

    def _kmeans(self, pool_ND: np.ndarray) -> np.ndarray:
        """Centroids (<= n_experts, D): the least-distortion run of `kmeans_restarts` seeded
        k-means runs, without the centroids that no training point is nearest to."""
        best, best_distortion = None, np.inf
        for restart in range(self.kmeans_restarts):
            centroids_ED = self._kmeans_run(pool_ND, self.random_state + restart)
            router = KNNIndex().fit(centroids_ED)
            dist_N1, nearest_N1 = router.search(pool_ND, 1, progress=False)
            distortion = float(np.sqrt(np.maximum(dist_N1, 0)).mean())
            if distortion < best_distortion:  # strict: ties keep the earlier seed
                best, best_distortion = centroids_ED[np.unique(nearest_N1)], distortion
        self.kmeans_distortion_ = best_distortion
        return np.ascontiguousarray(best)

    def _kmeans_run(self, pool_ND: np.ndarray, seed: int) -> np.ndarray:
        """Centroids (n_experts, D) of one FAISS seeded k-means over every training point."""
        N, D = pool_ND.shape
        kmeans = faiss.Kmeans(
            D,
            self.n_experts,
            niter=self.kmeans_iter,
            seed=seed,
            # FAISS subsamples 256 points per centroid by default; the paper clusters all of them,
            # which also makes one expert's centroid the exact mean.
            max_points_per_centroid=-(-N // self.n_experts),
            # Few points per centroid is intended here (the paper goes to one), so no warning.
            min_points_per_centroid=1,
        )
        kmeans.train(pool_ND)
        return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)

    def _finetune(
        self, pool_ND: torch.Tensor, y_N: torch.Tensor, cfg: TTTConfig, device: torch.device
    ) -> tuple[np.ndarray, np.ndarray]:
        """Experts' weights (E, C, D) and biases (E, C), fine-tuned in memory-sized chunks."""
        _, clf = head_parts(self.head_)
        W_CD = clf.weight.detach().to(device, torch.float32)
        b_C = clf.bias.detach().to(device, torch.float32)
        (C, D), E = W_CD.shape, len(self.centroids_)
        nbr_EK = torch.from_numpy(self.expert_neighbours_)
        W_ECD = np.empty((E, C, D), dtype=np.float32)
        b_EC = np.empty((E, C), dtype=np.float32)
        chunk = auto_chunk_size(self.k, D, C, device)
        bar = tqdm(total=E, desc="experts", unit="expert", disable=not self.progress, leave=False)
        for s in range(0, E, chunk):
            nbr_BK = nbr_EK[s : s + chunk]
            X_BKD = pool_ND[nbr_BK].to(device)
            W_BCD, b_BC = finetune(W_CD, b_C, X_BKD, y_N[nbr_BK].to(device), cfg)
            W_ECD[s : s + chunk], b_EC[s : s + chunk] = W_BCD.cpu().numpy(), b_BC.cpu().numpy()
            bar.update(len(nbr_BK))
        bar.close()
        return W_ECD, b_EC

    def _features(self, X) -> torch.Tensor:
        check_is_fitted(self)
        return model_features(self.head_, validate_X(self, X, model=self.head_, reset=False))

    def _route(self, h_ND: torch.Tensor) -> np.ndarray:
        return self.router_.search(h_ND, 1, progress=self.progress)[1][:, 0]

    def route(self, X) -> np.ndarray:
        """The expert (index into centroids_, coef_, intercept_) of each point: its nearest
        centroid by exact L2 in the head's feature space; ties go to the lower index."""
        return self._route(self._features(X))

    def _scores(self, X, neighbours: np.ndarray | None) -> np.ndarray:
        """Logits (N x C) of each point under its expert, in float64 so that a point's logits do
        not depend on the batch it came in."""
        h_ND = self._features(X)
        expert_N = self._route(h_ND)
        h_ND = h_ND.double().numpy()
        E, C, D = self.coef_.shape
        logits_NC = np.empty((len(h_ND), C))
        step = max(1, 2**23 // (C * D))  # cap the gathered float64 weights at ~64 MB
        for s in range(0, len(h_ND), step):
            e_B = expert_N[s : s + step]
            W_BCD = self.coef_[e_B].astype(np.float64)
            logits_NC[s : s + step] = np.einsum("bcd,bd->bc", W_BCD, h_ND[s : s + step])
            logits_NC[s : s + step] += self.intercept_[e_B]
        return logits_NC
