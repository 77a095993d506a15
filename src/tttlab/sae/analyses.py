"""The paper's three concept analyses of an SAE on a feature file (section "TTT in concept space").

    result = analyse(sae, pool_X, pool_y, test_X, test_y, AnalyseConfig(points=1000, k=50))
    result.metrics["sparsity"]["distinct_neighbourhood_mean"]

1. Similarity preservation: a test point's k neighbours chosen in feature space, in SAE
   reconstruction space and in concept (code) space; their overlaps (recall@k of one against
   another) and the concept-space cosine similarity of each space's neighbours to the test point.
2. Local sparsity: distinct concepts active across a k-neighbourhood against across k random
   pool points; TTT in concept space with all concepts, with only the test point's own, and with
   a learned per-neighbourhood subset (a mask trained with a straight-through estimator and a
   sparsity penalty), and the mean size of that subset.
3. Implicit concept selection: how often dense TTT on reconstructions and masked TTT in concept
   space predict the same label, and how close their top-10 probabilities are.
Also the accuracy table: the global head against TTT on features, reconstructions and codes, and
a majority vote. `analyse` runs them all; each analysis is its own function.

Every TTT here uses the same neighbours, found in feature space, so differences come from the
space a head is tuned in, not from the neighbours. Concept space itself (sparse codes, the head on
them, TTT on the active concepts) is `tttlab.sae.concepts`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from tttlab.data.features import carve_out
from tttlab.methods.baselines import vote_fractions
from tttlab.models.config import TrainConfig
from tttlab.models.train import fit, predict_logits
from tttlab.progress import phase
from tttlab.results import bootstrap_ci
from tttlab.retrieval import KNNIndex
from tttlab.sae.concepts import (
    CodeHead,
    SparseCodes,
    code_neighbours,
    concept_ttt,
    cosine_in_concept_space,
    distinct_concepts,
    encode_rows,
)
from tttlab.sae.config import AnalyseConfig
from tttlab.sae.model import SparseCoder, check_width
from tttlab.ttt import ttt_logits

SPACES = ("features", "reconstruction", "codes")
MODES = ("all", "own", "learned")
"""Concepts TTT in concept space tunes: all, the test point's own, a learned subset."""


class Rows(NamedTuple):
    """Labelled rows in the three spaces: features, their SAE reconstructions, their codes."""

    X: np.ndarray
    y: np.ndarray
    recon: np.ndarray
    """float32, the SAE's reconstruction of each row."""
    codes: SparseCodes

    def space(self, name: str) -> np.ndarray | torch.Tensor:
        """The rows as a head in space `name` reads them (codes packed for `CodeHead`)."""
        if name == "codes":
            return self.codes.packed()
        return self.recon if name == "reconstruction" else self.X


def encode(sae: SparseCoder, X: np.ndarray, y: np.ndarray) -> Rows:
    """`X` and `y` with the SAE's codes and reconstructions of X."""
    X = np.ascontiguousarray(X)
    codes, recon = encode_rows(sae, X)
    return Rows(X, y, recon, codes)


@dataclass
class AnalysisResult:
    """Tables (lists of rows), per-point arrays for plots, and headline metrics."""

    metrics: dict
    accuracy: list[dict]
    similarity: list[dict]
    sparsity: list[dict]
    arrays: dict[str, np.ndarray]


class Similarity(NamedTuple):
    """Analysis 1: its table, each space's neighbours (B x k) and their concept-space cosines."""

    rows: list[dict]
    neighbours: dict[str, np.ndarray]
    cosine: dict[str, np.ndarray]


class Sparsity(NamedTuple):
    """Analysis 2: its table, TTT in concept space per mode, and the per-point counts."""

    rows: list[dict]
    probs: dict[str, torch.Tensor]
    """Mode -> B x C probabilities of TTT in concept space."""
    kept: dict[str, np.ndarray]
    """Mode -> concepts each point's head was tuned on."""
    distinct_neighbourhood: np.ndarray
    distinct_random: np.ndarray
    mask_penalty: float
    """The learned mask's penalty: cfg.mask_penalty, or the one chosen on validation rows."""
    selection: list[dict]
    """One row per candidate mask penalty (empty when none were given)."""


def analyse(
    sae: SparseCoder,
    pool_X: np.ndarray,
    pool_y: np.ndarray,
    test_X: np.ndarray,
    test_y: np.ndarray,
    cfg: AnalyseConfig,
    progress: bool = False,
    where: tuple[str, str] = ("the pool", "the test set"),
) -> AnalysisResult:
    """Run the three analyses (see the module doc) on `cfg.points` seeded test points."""
    check_width(sae, pool_X.shape[1], where[0])
    check_width(sae, test_X.shape[1], where[1])
    if cfg.k > len(pool_X) - cfg.val_per_class * len(np.unique(pool_y)):
        raise ValueError(
            f"k={cfg.k} neighbours but {where[0]} has only {len(pool_X)} rows (less the "
            "validation carve-out): choose a smaller --k"
        )
    rng = np.random.default_rng(cfg.seed)
    pts = np.sort(rng.choice(len(test_X), min(cfg.points, len(test_X)), replace=False))
    split = carve_out(pool_y, {"val": cfg.val_per_class}, cfg.seed, where[0])
    rows = len(pool_X) + len(pts)
    phase(f"encoding {rows:,} rows with the SAE ({sae.cfg.latents:,} latents)", progress)
    pool = encode(sae, pool_X[split["train"]], pool_y[split["train"]])
    val = encode(sae, pool_X[split["val"]], pool_y[split["val"]])
    test = encode(sae, test_X[pts], test_y[pts])
    C = int(max(pool_y.max(), test_y.max())) + 1

    phase(
        f"global heads on features, reconstructions and codes: {cfg.head_epochs} epochs on "
        f"{len(pool.X):,} rows each",
        progress,
    )
    heads, probs = global_heads(pool, val, test, sae.cfg.latents, C, cfg)
    phase(
        f"similarity: the {cfg.k} nearest neighbours of {len(pts):,} points in 3 spaces", progress
    )
    similarity = similarity_preservation(pool, test, sae.cfg.latents, cfg)
    nbr_BK = similarity.neighbours["features"]
    random_BK = np.stack([rng.choice(len(pool.X), cfg.k, replace=False) for _ in range(len(pts))])
    for space in ("features", "reconstruction"):
        phase(f"TTT on {space}: {len(pts):,} points, k = {cfg.k}", progress)
        lin = heads[space]
        xp, xq = pool.space(space), test.space(space)
        logits = ttt_logits(
            lin.weight, lin.bias, xp, pool.y, xq, nbr_BK, cfg.ttt(), progress=progress
        )
        probs[f"ttt_{space}"] = logits.softmax(1)
    code_head = heads["codes"].classifier
    sparsity = local_sparsity(code_head, pool, val, test, nbr_BK, random_BK, cfg, progress)
    probs |= {f"ttt_codes_{mode}": p for mode, p in sparsity.probs.items()}
    preds = {name: p.argmax(1).numpy() for name, p in probs.items()}
    preds["majority"] = vote_fractions(pool.y[nbr_BK], C).argmax(1)
    accuracy = accuracy_table(preds, test.y, cfg)
    selection, gap = implicit_selection(probs, cfg.top)

    metrics = {
        "points": len(pts),
        "k": cfg.k,
        "mask_penalty": sparsity.mask_penalty,
        "mask_penalty_selection": sparsity.selection,
        "accuracy": {row["method"]: row["accuracy"] for row in accuracy},
        "similarity": {
            row["spaces"]: {k: v for k, v in row.items() if k != "spaces"}
            for row in similarity.rows
        },
        "sparsity": {
            "distinct_neighbourhood_mean": float(sparsity.distinct_neighbourhood.mean()),
            "distinct_random_mean": float(sparsity.distinct_random.mean()),
            "learned_mask_size_mean": float(sparsity.kept["learned"].mean()),
            "own_concepts_mean": float(sparsity.kept["own"].mean()),
        },
        "selection": selection,
    }
    arrays = {
        "points": pts,
        "distinct_neighbourhood": sparsity.distinct_neighbourhood,
        "distinct_random": sparsity.distinct_random,
        "kept_learned": sparsity.kept["learned"],
        "prob_gap": gap,
        **{f"cosine_{s}": similarity.cosine[s].reshape(-1) for s in SPACES},
    }
    return AnalysisResult(metrics, accuracy, similarity.rows, sparsity.rows, arrays)


def global_heads(
    pool: Rows, val: Rows, test: Rows, latents: int, C: int, cfg: AnalyseConfig
) -> tuple[dict[str, nn.Module], dict[str, torch.Tensor]]:
    """A linear head per space, trained on the pool (best epoch on `val`), and its probabilities
    on the test rows as `global_<space>`."""
    train = TrainConfig(epochs=cfg.head_epochs, batch_size=cfg.head_batch, lr=cfg.head_lr)
    heads, probs = {}, {}
    for space in SPACES:
        xp = pool.space(space)
        torch.manual_seed(cfg.seed)
        head = CodeHead(latents, C) if space == "codes" else nn.Linear(xp.shape[1], C)
        model = _HeadWrapper(head)
        fit(model, xp, pool.y, val.space(space), val.y, train, progress=False, seed=cfg.seed)
        heads[space] = head
        probs[f"global_{space}"] = predict_logits(model, test.space(space)).softmax(1)
    return heads, probs


def similarity_preservation(pool: Rows, test: Rows, latents: int, cfg: AnalyseConfig) -> Similarity:
    """Analysis 1: each test point's k neighbours in every space, how much the spaces' neighbour
    sets overlap (recall@k), and how close each space's neighbours are in concept space."""
    nbr = {
        "features": KNNIndex(seed=cfg.seed).fit(pool.X).search(test.X, cfg.k)[1],
        "reconstruction": KNNIndex(seed=cfg.seed).fit(pool.recon).search(test.recon, cfg.k)[1],
        "codes": code_neighbours(pool.codes, test.codes, latents, cfg.k),
    }
    cos = {s: cosine_in_concept_space(pool.codes, test.codes, n, latents) for s, n in nbr.items()}
    rows = []
    for i, a in enumerate(SPACES):
        for b in SPACES[i + 1 :]:
            overlap = [
                len(np.intersect1d(x, y)) / cfg.k for x, y in zip(nbr[a], nbr[b], strict=True)
            ]
            rows.append({"spaces": f"{a} vs {b}", f"recall_at_{cfg.k}": float(np.mean(overlap))})
    for s in SPACES:
        c = cos[s].reshape(-1)
        rows.append(
            {
                "spaces": f"neighbours from {s}",
                "cosine_mean": float(c.mean()),
                "cosine_median": float(np.median(c)),
                "cosine_p10": float(np.quantile(c, 0.1)),
            }
        )
    return Similarity(rows, nbr, cos)


def local_sparsity(
    code_head: nn.Linear,
    pool: Rows,
    val: Rows,
    test: Rows,
    nbr_BK: np.ndarray,
    random_BK: np.ndarray,
    cfg: AnalyseConfig,
    progress: bool = False,
) -> Sparsity:
    """Analysis 2: distinct concepts across each test point's neighbours (`nbr_BK`) against
    across random pool points (`random_BK`), and TTT of `code_head` in concept space on all, the
    point's own and a learned subset of the neighbourhood's concepts (penalty chosen on `val`)."""
    distinct_nbr = distinct_concepts(pool.codes, nbr_BK)
    distinct_rand = distinct_concepts(pool.codes, random_BK)
    selection = []
    if cfg.mask_penalties:
        rows = min(cfg.points, len(val.X))
        candidates = len(cfg.mask_penalties)
        phase(f"selecting the mask penalty on {rows} rows ({candidates} candidates)", progress)
        cfg, selection = _select_mask_penalty(code_head, pool, val, cfg)
    y = torch.from_numpy(pool.y)
    probs, kept = {}, {}
    for mode in MODES:
        phase(f"TTT in concept space, {mode} concepts: {len(test.y):,} points", progress)
        probs[mode], kept[mode], active = concept_ttt(
            code_head.weight, code_head.bias, pool.codes, y, test.codes, nbr_BK, cfg, mode, progress
        )
    counts = [
        (f"distinct concepts across the {cfg.k} nearest neighbours", distinct_nbr),
        (f"distinct concepts across {cfg.k} random points", distinct_rand),
        ("concepts active in the neighbourhood or the test point", active),
        ("concepts kept by the learned mask", kept["learned"]),
        ("the test point's own active concepts", kept["own"]),
    ]
    rows = [
        {"what": what, "mean": float(n.mean()), "median": float(np.median(n))} for what, n in counts
    ]
    return Sparsity(rows, probs, kept, distinct_nbr, distinct_rand, cfg.mask_penalty, selection)


def implicit_selection(probs: dict[str, torch.Tensor], top: int) -> tuple[dict, np.ndarray]:
    """Analysis 3: how often dense TTT on reconstructions and masked TTT in concept space agree,
    and how far apart their probabilities of dense TTT's `top` classes are (per point)."""
    dense, masked = probs["ttt_reconstruction"], probs["ttt_codes_learned"]
    top = min(top, dense.shape[1])
    top_idx = dense.topk(top, dim=1).indices
    gap = (dense.gather(1, top_idx) - masked.gather(1, top_idx)).abs().mean(1).numpy()
    overlap = [
        len(np.intersect1d(a, b)) / top
        for a, b in zip(top_idx.numpy(), masked.topk(top, dim=1).indices.numpy(), strict=True)
    ]
    label = {name: p.argmax(1).numpy() for name, p in probs.items()}
    measures = {
        "agreement_dense_recon_vs_masked_codes": float(
            (label["ttt_reconstruction"] == label["ttt_codes_learned"]).mean()
        ),
        "agreement_dense_recon_vs_all_codes": float(
            (label["ttt_reconstruction"] == label["ttt_codes_all"]).mean()
        ),
        f"top{top}_prob_abs_diff_mean": float(gap.mean()),
        f"top{top}_class_overlap_mean": float(np.mean(overlap)),
    }
    return measures, gap


def accuracy_table(
    preds: dict[str, np.ndarray], y: np.ndarray, cfg: AnalyseConfig
) -> list[dict[str, float | str]]:
    """Each method's accuracy on the test rows with its seeded bootstrap interval, one row each."""
    rows = []
    for name, pred in preds.items():
        est = bootstrap_ci((pred == y).astype(float), cfg.n_boot, seed=cfg.seed)
        rows.append({"method": name, "accuracy": est.mean, "ci_low": est.low, "ci_high": est.high})
    return rows


def _select_mask_penalty(
    code_head: nn.Linear, pool: Rows, val: Rows, cfg: AnalyseConfig
) -> tuple[AnalyseConfig, list[dict]]:
    """(cfg with the chosen mask_penalty, one row per candidate) from the validation rows."""
    rows_v = np.random.default_rng(cfg.seed).permutation(len(val.X))[: cfg.points]
    yv = val.y[rows_v]
    codes_v = SparseCodes(val.codes.idx[rows_v], val.codes.acts[rows_v])
    nbr_v = KNNIndex(seed=cfg.seed).fit(pool.X).search(val.X[rows_v], cfg.k)[1]
    W, b, yp = code_head.weight, code_head.bias, torch.from_numpy(pool.y)
    base = concept_ttt(W, b, pool.codes, yp, codes_v, nbr_v, cfg, "all")[0]
    base_acc = float((base.argmax(1).numpy() == yv).mean())
    rows, chosen = [], cfg.mask_penalty
    for penalty in sorted(cfg.mask_penalties):
        trial = dataclasses.replace(cfg, mask_penalty=penalty)
        probs, kept, _ = concept_ttt(W, b, pool.codes, yp, codes_v, nbr_v, trial, "learned")
        acc = float((probs.argmax(1).numpy() == yv).mean())
        rows.append(
            {
                "mask_penalty": penalty,
                "val_accuracy": acc,
                "val_accuracy_all": base_acc,
                "kept_mean": float(kept.mean()),
            }
        )
        if acc >= base_acc - cfg.mask_tolerance:
            chosen = penalty
    return dataclasses.replace(cfg, mask_penalty=chosen), rows


class _HeadWrapper(nn.Module):
    """`fit` reads the class count from `model.classifier`; CodeHead has one, nn.Linear is one."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.classifier = inner if isinstance(inner, nn.Linear) else inner.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)
