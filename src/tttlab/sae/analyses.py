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
Also the global head against TTT on features, reconstructions and codes, and a majority vote.

Every TTT here uses the same neighbours, found in feature space, so differences come from the
space a head is tuned in, not from the neighbours. Codes are kept sparse (k indices and values
per row): a linear head on codes is an embedding bag, code-space neighbours come from a sparse
product, and TTT in concept space is run on the concepts active in the neighbourhood or the test
point only (the other columns get zero gradient, so this is exact; a test checks it against the
engine on dense codes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tttlab.checks import check_int, check_number
from tttlab.data.features import carve_out
from tttlab.models.config import TrainConfig
from tttlab.models.train import fit, predict_logits
from tttlab.results import bootstrap_ci, figure, save_figure
from tttlab.retrieval import KNNIndex
from tttlab.sae.model import SparseCoder, check_width
from tttlab.ttt import TTTConfig, ttt_logits

SPACES = ("features", "reconstruction", "codes")


@dataclass
class AnalyseConfig:
    """Settings of the three analyses."""

    points: int = 1000
    """Test points analysed (a seeded sample of the test set; all if it has fewer)."""
    k: int = 50
    """Neighbourhood size, for the concept counts and every TTT."""
    ttt_epochs: int = 50
    """Full-batch Adam steps of every TTT (features, reconstructions, concept space)."""
    ttt_lr: float = 0.01
    """Adam learning rate of every TTT head."""
    mask_lr: float = 0.05
    """Adam learning rate of the learned mask's logits."""
    mask_penalty: float = 0.01
    """Sparsity penalty per kept concept, added to the neighbourhood's mean cross-entropy."""
    mask_init: float = 1.0
    """Initial mask logit (> 0: every concept starts kept)."""
    mask_penalties: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    """If not empty, mask_penalty is chosen among these on (up to `points`) validation rows, never
    test points: the largest whose masked TTT is within mask_tolerance of all-concepts TTT there."""
    mask_tolerance: float = 0.005
    """Accuracy (a fraction) the chosen mask penalty may lose on the validation rows."""
    head_epochs: int = 20
    """Epochs of the global linear heads (on features, reconstructions, codes)."""
    head_lr: float = 1e-3
    """Adam learning rate of the global heads."""
    head_batch: int = 256
    """Minibatch of the global heads."""
    val_per_class: int = 10
    """Rows per class carved out of the pool to pick the global heads' best epoch."""
    top: int = 10
    """Top probabilities compared in the implicit-selection analysis."""
    chunk: int = 64
    """Test points fine-tuned together in concept space (memory only)."""
    n_boot: int = 1000
    """Bootstrap resamples for the accuracy intervals."""
    seed: int = 0
    """Seeds the test sample, the random sets, the carve-out and the heads."""

    def __post_init__(self):
        for name in ("points", "k", "head_epochs", "head_batch", "val_per_class", "top"):
            check_int(getattr(self, name), name, min=1)
        for name in ("ttt_epochs", "seed"):
            check_int(getattr(self, name), name, min=0)
        check_int(self.chunk, "chunk", min=1)
        check_int(self.n_boot, "n_boot", min=1)
        for name in ("ttt_lr", "mask_lr", "head_lr"):
            check_number(getattr(self, name), name, min=0, strict_min=True)
        check_number(self.mask_penalty, "mask_penalty", min=0)
        check_number(self.mask_tolerance, "mask_tolerance", min=0)
        self.mask_penalties = tuple(self.mask_penalties)
        for i, value in enumerate(self.mask_penalties):
            check_number(value, f"mask_penalties[{i}]", min=0)
        check_number(self.mask_init, "mask_init")

    def ttt(self) -> TTTConfig:
        return TTTConfig(k=self.k, epochs=self.ttt_epochs, lr=self.ttt_lr)


class SparseCodes(NamedTuple):
    """Rows of concept codes, k per row: indices and activations (>= 0)."""

    idx: torch.Tensor
    """N x k latent indices (int64)."""
    acts: torch.Tensor
    """N x k activations."""

    def packed(self) -> torch.Tensor:
        """N x 2k float32: indices then activations, the input `CodeHead` reads (indices are
        exact in float32 below 2^24 latents)."""
        return torch.cat([self.idx.float(), self.acts], 1)

    def dense(self, latents: int) -> torch.Tensor:
        return self.acts.new_zeros(len(self.idx), latents).scatter_(1, self.idx, self.acts)


class CodeHead(nn.Module):
    """A linear head on concept codes given sparse (`SparseCodes.packed`): an embedding bag over
    the k active concepts' weight columns, the same as `classifier` on the dense code."""

    def __init__(self, latents: int, num_classes: int):
        super().__init__()
        self.classifier = nn.Linear(latents, num_classes)

    def forward(self, packed_BS: torch.Tensor) -> torch.Tensor:
        k = packed_BS.shape[1] // 2
        idx, acts = packed_BS[:, :k].long(), packed_BS[:, k:]
        W_HC = self.classifier.weight.T.contiguous()
        return (
            F.embedding_bag(idx, W_HC, per_sample_weights=acts, mode="sum") + self.classifier.bias
        )


@torch.no_grad()
def encode_rows(
    sae: SparseCoder, X: np.ndarray, batch: int = 4096
) -> tuple[SparseCodes, np.ndarray]:
    """(sparse codes, reconstructions float32) of every row, in eval mode and batches."""
    idx, acts, recon = [], [], []
    for s in range(0, len(X), batch):
        x = torch.from_numpy(np.ascontiguousarray(X[s : s + batch], dtype=np.float32))
        enc = sae._eval_encode(x, None)
        idx.append(enc.top_indices.cpu())
        acts.append(enc.top_acts.cpu())
        recon.append(sae.decode(enc.top_acts, enc.top_indices).cpu())
    return SparseCodes(torch.cat(idx), torch.cat(acts)), torch.cat(recon).numpy()


def code_neighbours(pool: SparseCodes, queries: SparseCodes, latents: int, k: int) -> np.ndarray:
    """The k pool rows of highest cosine similarity to each query in concept space (ties by
    index), from one sparse product: B x N similarities without any dense N x H matrix."""
    rows = torch.arange(len(pool.idx)).repeat_interleave(pool.idx.shape[1])
    norms = pool.acts.norm(dim=1).clamp_min(1e-12)
    vals = (pool.acts / norms[:, None]).reshape(-1)
    P_NH = torch.sparse_coo_tensor(
        torch.stack([rows, pool.idx.reshape(-1)]),
        vals,
        (len(pool.idx), latents),
        check_invariants=False,
    ).coalesce()
    Q_BH = queries.dense(latents)
    Q_BH = Q_BH / Q_BH.norm(dim=1, keepdim=True).clamp_min(1e-12)
    out = []
    for s in range(0, len(Q_BH), 256):
        sim_NB = torch.sparse.mm(P_NH, Q_BH[s : s + 256].T).double()
        # sort by similarity, then by pool index: a stable sort of the descending order
        order = torch.argsort(-sim_NB.T, dim=1, stable=True)[:, :k]
        out.append(order)
    return torch.cat(out).numpy()


def cosine_in_concept_space(codes: SparseCodes, q: SparseCodes, nbr_BK: np.ndarray, H: int):
    """B x K cosine similarities of each query's code to its neighbours' codes."""
    Q_BH = q.dense(H)
    Q_BH = Q_BH / Q_BH.norm(dim=1, keepdim=True).clamp_min(1e-12)
    nbr = torch.from_numpy(nbr_BK)
    idx_BKs, acts_BKs = codes.idx[nbr], codes.acts[nbr]
    dots = torch.gather(Q_BH[:, None, :].expand(-1, nbr.shape[1], -1), 2, idx_BKs)
    norms = acts_BKs.norm(dim=2).clamp_min(1e-12)
    return ((dots * acts_BKs).sum(2) / norms).numpy()


def distinct_concepts(codes: SparseCodes, rows_BK: np.ndarray) -> np.ndarray:
    """Per row set, the number of distinct concepts active (activation > 0) across its rows."""
    out = np.empty(len(rows_BK), dtype=np.int64)
    for b, rows in enumerate(rows_BK):
        idx, acts = codes.idx[rows], codes.acts[rows]
        out[b] = len(torch.unique(idx[acts > 0]))
    return out


# ---- TTT in concept space, restricted to the concepts that matter ----------------------------


def concept_ttt(
    weight_CH: torch.Tensor,
    bias_C: torch.Tensor,
    pool: SparseCodes,
    pool_y: torch.Tensor,
    queries: SparseCodes,
    nbr_BK: np.ndarray,
    cfg: AnalyseConfig,
    mode: str,
    progress: bool = False,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(probabilities B x C, concepts kept per point, concepts active in the neighbourhood or
    the query per point) of TTT in concept space, one head per query tuned on its k neighbours'
    codes, B at a time with stacked weights and one Adam over them (each point's loss is its own,
    so its result is the one it would get alone).

    mode: "all" (every concept), "own" (only the query's own active concepts, in the neighbours
    and the query alike), "learned" (a per-neighbourhood 0/1 mask over the concepts, trained with
    the head: hard in the forward pass, sigmoid's gradient in the backward pass (straight-through),
    plus mask_penalty per kept concept).
    """
    if mode not in ("all", "own", "learned"):
        raise ValueError(f"mode={mode!r} is not supported; use all, own or learned")
    H = weight_CH.shape[1]
    probs, kept, active = [], [], []
    starts = range(0, len(nbr_BK), cfg.chunk)
    for s in tqdm(starts, desc=f"concept ttt ({mode})", disable=not progress, leave=False):
        nbr = torch.from_numpy(nbr_BK[s : s + cfg.chunk, : cfg.k])
        q = SparseCodes(queries.idx[s : s + cfg.chunk], queries.acts[s : s + cfg.chunk])
        p, m, a = _concept_ttt_chunk(weight_CH, bias_C, pool, pool_y, q, nbr, cfg, mode, H)
        probs.append(p)
        kept.append(m)
        active.append(a)
    return torch.cat(probs), np.concatenate(kept), np.concatenate(active)


def _concept_ttt_chunk(weight_CH, bias_C, pool, pool_y, q, nbr_BK, cfg, mode, H):
    B, K = nbr_BK.shape
    idx_BKs, acts_BKs = pool.idx[nbr_BK], pool.acts[nbr_BK]
    ids_BM = torch.cat([idx_BKs.reshape(B, -1), q.idx], 1)
    on_BM = torch.cat([acts_BKs.reshape(B, -1), q.acts], 1) > 0
    # V_b: the concepts active in point b's neighbourhood or in b itself, sorted, padded with H
    ids_BM = torch.where(on_BM, ids_BM, H)
    V_BV = torch.sort(ids_BM, dim=1).values
    V_BV = torch.where(torch.diff(V_BV, dim=1, prepend=V_BV[:, :1] - 1) == 0, H, V_BV)
    V_BV = torch.sort(V_BV, dim=1).values
    width = max(1, int((V_BV < H).sum(1).max()))
    V_BV = V_BV[:, :width].contiguous()
    valid_BV = V_BV < H
    n_active = valid_BV.sum(1).numpy()

    # Positions in V_b; an inactive entry (activation 0) may land anywhere, so scatter by adding.
    pos_BKs = torch.searchsorted(V_BV, idx_BKs.reshape(B, -1)).clamp_max(width - 1)
    X_BKV = acts_BKs.new_zeros(B, K, width)
    X_BKV.scatter_add_(2, pos_BKs.reshape(idx_BKs.shape), acts_BKs)
    pos_q = torch.searchsorted(V_BV, q.idx).clamp_max(width - 1)
    xq_BV = q.acts.new_zeros(B, width).scatter_add_(1, pos_q, q.acts)
    own_BV = (xq_BV > 0) & valid_BV

    safe_BV = V_BV.clamp_max(H - 1)
    W_BCV = weight_CH.detach().T[safe_BV].transpose(1, 2).contiguous()
    W_BCV = W_BCV * valid_BV[:, None, :]
    b_BC = bias_C.detach().expand(B, -1).clone()
    W_BCV.requires_grad_(True)
    b_BC.requires_grad_(True)
    y_BK = pool_y[nbr_BK]
    params = [{"params": [W_BCV, b_BC], "lr": cfg.ttt_lr}]
    logit_BV = None
    if mode == "learned":
        logit_BV = torch.full((B, width), float(cfg.mask_init), requires_grad=True)
        params.append({"params": [logit_BV], "lr": cfg.mask_lr})
    fixed_BV = (own_BV if mode == "own" else valid_BV).float()
    opt = torch.optim.Adam(params)

    def mask() -> torch.Tensor:
        if logit_BV is None:
            return fixed_BV
        soft = torch.sigmoid(logit_BV)
        hard = (logit_BV > 0).float()
        return (hard + soft - soft.detach()) * valid_BV  # straight-through

    for _ in range(cfg.ttt_epochs):
        m_BV = mask()
        logits_BKC = torch.bmm(X_BKV * m_BV[:, None, :], W_BCV.transpose(1, 2)) + b_BC[:, None]
        ce_B = F.cross_entropy(logits_BKC.reshape(B * K, -1), y_BK.reshape(-1), reduction="none")
        loss = ce_B.reshape(B, K).mean(1).sum()
        if logit_BV is not None:
            loss = loss + cfg.mask_penalty * (torch.sigmoid(logit_BV) * valid_BV).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        m_BV = mask()
        logits_BC = torch.bmm(W_BCV, (xq_BV * m_BV)[:, :, None])[:, :, 0] + b_BC
        kept = (m_BV * valid_BV).sum(1).numpy().astype(np.int64)
    return logits_BC.softmax(1), kept, n_active


# ---- the whole study ---------------------------------------------------------------------------


@dataclass
class AnalysisResult:
    """Tables (lists of rows), per-point arrays for plots, and headline metrics."""

    metrics: dict
    accuracy: list[dict]
    similarity: list[dict]
    sparsity: list[dict]
    arrays: dict[str, np.ndarray]


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
    H = sae.cfg.latents
    rng = np.random.default_rng(cfg.seed)
    pts = np.sort(rng.choice(len(test_X), min(cfg.points, len(test_X)), replace=False))
    split = carve_out(pool_y, {"val": cfg.val_per_class}, cfg.seed, where[0])
    tr, va = split["train"], split["val"]
    Xp, yp = np.ascontiguousarray(pool_X[tr]), pool_y[tr]
    Xv, yv = np.ascontiguousarray(pool_X[va]), pool_y[va]
    Xq, yq = np.ascontiguousarray(test_X[pts]), test_y[pts]
    C = int(max(pool_y.max(), test_y.max())) + 1

    codes_p, recon_p = encode_rows(sae, Xp)
    codes_v, recon_v = encode_rows(sae, Xv)
    codes_q, recon_q = encode_rows(sae, Xq)

    # global heads on the three representations
    head_cfg = TrainConfig(epochs=cfg.head_epochs, batch_size=cfg.head_batch, lr=cfg.head_lr)
    heads = {}
    inputs = {
        "features": (Xp, Xv, Xq, lambda d: nn.Linear(d, C)),
        "reconstruction": (recon_p, recon_v, recon_q, lambda d: nn.Linear(d, C)),
        "codes": (codes_p.packed(), codes_v.packed(), codes_q.packed(), lambda _: CodeHead(H, C)),
    }
    probs: dict[str, torch.Tensor] = {}
    for space, (xp, xv, xq, build) in inputs.items():
        torch.manual_seed(cfg.seed)
        model = _HeadWrapper(build(xp.shape[1]))
        fit(model, xp, yp, xv, yv, head_cfg, progress=False, seed=cfg.seed)
        heads[space] = model.inner
        probs[f"global_{space}"] = predict_logits(model, xq).softmax(1)

    # neighbours in each space
    nbr = {
        "features": KNNIndex(seed=cfg.seed).fit(Xp).search(Xq, cfg.k)[1],
        "reconstruction": KNNIndex(seed=cfg.seed).fit(recon_p).search(recon_q, cfg.k)[1],
        "codes": code_neighbours(codes_p, codes_q, H, cfg.k),
    }
    cos = {s: cosine_in_concept_space(codes_p, codes_q, n, H) for s, n in nbr.items()}
    similarity = []
    for i, a in enumerate(SPACES):
        for b in SPACES[i + 1 :]:
            overlap = [
                len(np.intersect1d(x, y)) / cfg.k for x, y in zip(nbr[a], nbr[b], strict=True)
            ]
            similarity.append(
                {"spaces": f"{a} vs {b}", f"recall_at_{cfg.k}": float(np.mean(overlap))}
            )
    for s in SPACES:
        c = cos[s].reshape(-1)
        similarity.append(
            {
                "spaces": f"neighbours from {s}",
                "cosine_mean": float(c.mean()),
                "cosine_median": float(np.median(c)),
                "cosine_p10": float(np.quantile(c, 0.1)),
            }
        )

    # local sparsity: concepts across a neighbourhood vs across random points
    random_BK = np.stack([rng.choice(len(Xp), cfg.k, replace=False) for _ in range(len(pts))])
    distinct_nbr = distinct_concepts(codes_p, nbr["features"])
    distinct_rand = distinct_concepts(codes_p, random_BK)

    # TTT: same (feature-space) neighbours, three spaces
    ttt = cfg.ttt()
    nf = nbr["features"]
    yp_t = torch.from_numpy(yp)
    for space, (xp, xq) in {"features": (Xp, Xq), "reconstruction": (recon_p, recon_q)}.items():
        lin = heads[space]
        logits = ttt_logits(lin.weight, lin.bias, xp, yp, xq, nf, ttt, progress=progress)
        probs[f"ttt_{space}"] = logits.softmax(1)
    code_lin = heads["codes"].classifier
    selection = []
    if cfg.mask_penalties:
        cfg, selection = _select_mask_penalty(code_lin, codes_p, yp_t, Xp, Xv, yv, codes_v, cfg)
    kept = {}
    for mode in ("all", "own", "learned"):
        p, kept[mode], active = concept_ttt(
            code_lin.weight, code_lin.bias, codes_p, yp_t, codes_q, nf, cfg, mode, progress
        )
        probs[f"ttt_codes_{mode}"] = p
    votes = np.stack([np.bincount(yp[row], minlength=C) for row in nf])
    preds = {name: p.argmax(1).numpy() for name, p in probs.items()}
    preds["majority"] = votes.argmax(1)

    accuracy = []
    for name, pred in preds.items():
        est = bootstrap_ci((pred == yq).astype(float), cfg.n_boot, seed=cfg.seed)
        accuracy.append(
            {"method": name, "accuracy": est.mean, "ci_low": est.low, "ci_high": est.high}
        )

    # implicit concept selection: dense TTT on reconstructions vs masked TTT on codes
    dense, masked = probs["ttt_reconstruction"], probs["ttt_codes_learned"]
    top = min(cfg.top, C)
    top_idx = dense.topk(top, dim=1).indices
    gap = (dense.gather(1, top_idx) - masked.gather(1, top_idx)).abs().mean(1).numpy()
    overlap_top = [
        len(np.intersect1d(a, b)) / top
        for a, b in zip(top_idx.numpy(), masked.topk(top, dim=1).indices.numpy(), strict=True)
    ]
    same = preds["ttt_reconstruction"] == preds["ttt_codes_learned"]

    sparsity = [
        {
            "what": f"distinct concepts across the {cfg.k} nearest neighbours",
            "mean": float(distinct_nbr.mean()),
            "median": float(np.median(distinct_nbr)),
        },
        {
            "what": f"distinct concepts across {cfg.k} random points",
            "mean": float(distinct_rand.mean()),
            "median": float(np.median(distinct_rand)),
        },
        {
            "what": "concepts active in the neighbourhood or the test point",
            "mean": float(active.mean()),
            "median": float(np.median(active)),
        },
        {
            "what": "concepts kept by the learned mask",
            "mean": float(kept["learned"].mean()),
            "median": float(np.median(kept["learned"])),
        },
        {
            "what": "the test point's own active concepts",
            "mean": float(kept["own"].mean()),
            "median": float(np.median(kept["own"])),
        },
    ]
    acc = {row["method"]: row["accuracy"] for row in accuracy}
    metrics = {
        "points": len(pts),
        "k": cfg.k,
        "mask_penalty": cfg.mask_penalty,
        "mask_penalty_selection": selection,
        "accuracy": acc,
        "similarity": {
            row["spaces"]: {k: v for k, v in row.items() if k != "spaces"} for row in similarity
        },
        "sparsity": {
            "distinct_neighbourhood_mean": float(distinct_nbr.mean()),
            "distinct_random_mean": float(distinct_rand.mean()),
            "learned_mask_size_mean": float(kept["learned"].mean()),
            "own_concepts_mean": float(kept["own"].mean()),
        },
        "selection": {
            "agreement_dense_recon_vs_masked_codes": float(same.mean()),
            "agreement_dense_recon_vs_all_codes": float(
                (preds["ttt_reconstruction"] == preds["ttt_codes_all"]).mean()
            ),
            f"top{top}_prob_abs_diff_mean": float(gap.mean()),
            f"top{top}_class_overlap_mean": float(np.mean(overlap_top)),
        },
    }
    arrays = {
        "points": pts,
        "distinct_neighbourhood": distinct_nbr,
        "distinct_random": distinct_rand,
        "kept_learned": kept["learned"],
        "prob_gap": gap,
        **{f"cosine_{s}": cos[s].reshape(-1) for s in SPACES},
    }
    return AnalysisResult(metrics, accuracy, similarity, sparsity, arrays)


def _select_mask_penalty(code_lin, codes_p, yp_t, Xp, Xv, yv, codes_v, cfg):
    """(cfg with the chosen mask_penalty, one row per candidate) from the validation rows."""
    rows_v = np.random.default_rng(cfg.seed).permutation(len(Xv))[: cfg.points]
    Xv, yv = Xv[rows_v], yv[rows_v]
    codes_v = SparseCodes(codes_v.idx[rows_v], codes_v.acts[rows_v])
    nbr_v = KNNIndex(seed=cfg.seed).fit(Xp).search(Xv, cfg.k)[1]
    W, b = code_lin.weight, code_lin.bias
    base = concept_ttt(W, b, codes_p, yp_t, codes_v, nbr_v, cfg, "all")[0]
    base_acc = float((base.argmax(1).numpy() == yv).mean())
    rows, chosen = [], cfg.mask_penalty
    for penalty in sorted(cfg.mask_penalties):
        trial = dataclasses.replace(cfg, mask_penalty=penalty)
        probs, kept, _ = concept_ttt(W, b, codes_p, yp_t, codes_v, nbr_v, trial, "learned")
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


# ---- plots, report, command line ---------------------------------------------------------------


def plot_analyses(result: AnalysisResult, path: Path) -> Path:
    """Three panels: concept-space cosine of each space's neighbours; distinct concepts across a
    neighbourhood, random points and the learned mask; the dense/masked probability gap."""
    a = result.arrays
    fig = figure((13, 3.8))
    ax = fig.add_subplot(1, 3, 1)
    for s in SPACES:
        ax.hist(a[f"cosine_{s}"], bins=40, alpha=0.5, label=f"neighbours from {s}")
    ax.set_xlabel("cosine similarity to the test point, concept space")
    ax.set_ylabel("neighbours")
    ax.legend(fontsize=8)
    ax.set_title("1. similarity preservation", fontsize=10)
    ax = fig.add_subplot(1, 3, 2)
    k = result.metrics["k"]
    for key, label in (
        ("distinct_neighbourhood", f"{k} neighbours"),
        ("distinct_random", f"{k} random points"),
        ("kept_learned", "kept by the learned mask"),
    ):
        ax.hist(a[key], bins=30, alpha=0.5, label=label)
    ax.set_xlabel("distinct concepts")
    ax.set_ylabel("test points")
    ax.legend(fontsize=8)
    ax.set_title("2. local sparsity", fontsize=10)
    ax = fig.add_subplot(1, 3, 3)
    ax.hist(a["prob_gap"], bins=30, color="tab:purple")
    ax.set_xlabel("mean |p dense recon - p masked codes|, top classes")
    ax.set_ylabel("test points")
    agree = result.metrics["selection"]["agreement_dense_recon_vs_masked_codes"]
    ax.set_title(f"3. implicit selection: {100 * agree:.1f}% same label", fontsize=10)
    for ax in fig.axes:
        ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=120)


PAPER = {
    "dead latents": "about 4%",
    "distinct concepts per 50-neighbourhood": "about 180",
    "concepts kept by the learned mask": "about 40, no accuracy loss (72.64%)",
    "only the test point's own 16 concepts": "71.51%",
    "agreement dense (reconstructions) vs masked (concepts) TTT": "about 89%",
}


def analyse_run(
    sae_path: str | Path,
    features: str | Path,
    test_features: str | Path | None,
    cfg: AnalyseConfig,
    out: str | Path = "runs",
    normalize: bool = False,
    test_per_class: int = 50,
    progress: bool = True,
) -> tuple[Path, bool]:
    """Load an SAE and the features, run `analyse`, write a run folder: metrics.json, the three
    tables and the accuracy table as CSV, analyses.png and report.md."""
    from tttlab.atomic import dumps_json
    from tttlab.data.features import read_features
    from tttlab.results import write_rows_csv
    from tttlab.sae.runs import load_sae, write_sae_folder

    sae = load_sae(sae_path)
    X, y = read_features(features, normalize)
    check_width(sae, X.shape[1], str(features))
    if test_features is None:
        split = carve_out(y, {"test": test_per_class}, cfg.seed, features)
        pool, test = split["train"], split["test"]
        (pX, py), (tX, ty) = (X[pool], y[pool]), (X[test], y[test])
        names = (f"{features} (less the test carve-out)", f"{features} (test carve-out)")
    else:
        tX, ty = read_features(test_features, normalize)
        pX, py = X, y
        names = (str(features), str(test_features))
    settings = {
        "sae": str(Path(sae_path).expanduser().resolve()),
        "sae_config": dataclasses.asdict(sae.cfg),
        "features": str(Path(features).expanduser().resolve()),
        "test_features": None if test_features is None else str(Path(test_features).resolve()),
        "normalize": normalize,
        "analyse": dataclasses.asdict(cfg),
    }

    def write(tmp: Path) -> None:
        result = analyse(sae, pX, py, tX, ty, cfg, progress=progress, where=names)
        (tmp / "metrics.json").write_text(dumps_json(result.metrics), encoding="utf-8")
        write_rows_csv(tmp / "accuracy.csv", result.accuracy)
        write_rows_csv(tmp / "similarity.csv", result.similarity)
        write_rows_csv(tmp / "sparsity.csv", result.sparsity)
        plot_analyses(result, tmp / "analyses.png")
        (tmp / "report.md").write_text(_report(result, settings), encoding="utf-8")

    return write_sae_folder(Path(out).expanduser(), "sae-analyse", settings, write)


def _report(result: AnalysisResult, settings: dict) -> str:
    from tttlab.atomic import dumps_json
    from tttlab.results import markdown_table

    m = result.metrics
    acc_rows = [
        {
            "method": r["method"],
            "accuracy": f"{100 * r['accuracy']:.2f}%",
            "95% CI": f"[{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}]",
        }
        for r in result.accuracy
    ]
    sim_cols = list(dict.fromkeys(k for r in result.similarity for k in r))
    sim_rows = [{c: _fmt(r.get(c, "")) for c in sim_cols} for r in result.similarity]
    spa_rows = [{c: _fmt(v) for c, v in r.items()} for r in result.sparsity]
    sel_rows = [{"measure": k, "value": _fmt(v)} for k, v in m["selection"].items()]
    paper_rows = [{"quantity": k, "paper (CLIP ViT-B/16, ImageNet)": v} for k, v in PAPER.items()]
    parts = [
        "# SAE concept analyses",
        f"{m['points']} seeded test points, k = {m['k']} neighbours (found in feature space for "
        "every TTT). See `tttlab.sae.analyses` for the definitions.",
        "## Accuracy: global heads, TTT in three spaces, majority vote",
        markdown_table(acc_rows, ["method", "accuracy", "95% CI"]),
        "## 1. Similarity preservation",
        markdown_table(sim_rows, sim_cols),
        "## 2. Local sparsity",
        markdown_table(spa_rows, list(spa_rows[0])),
        f"Mask penalty per kept concept: {m['mask_penalty']:g}"
        + (" (chosen on validation rows:)" if m["mask_penalty_selection"] else "."),
        *(
            [
                markdown_table(
                    [{c: _fmt(v) for c, v in r.items()} for r in m["mask_penalty_selection"]],
                    list(m["mask_penalty_selection"][0]),
                )
            ]
            if m["mask_penalty_selection"]
            else []
        ),
        "## 3. Implicit concept selection",
        markdown_table(sel_rows, ["measure", "value"]),
        "![analyses](analyses.png)",
        "## The paper's values",
        markdown_table(paper_rows, list(paper_rows[0])),
        "## Settings",
        f"```json\n{dumps_json(settings).rstrip()}\n```",
    ]
    return "\n\n".join(parts) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def analyse_main(argv: list[str]) -> int:
    """`tttlab sae analyse --sae RUN --features POOL [--test-features TEST] [flags]`."""
    from tttlab.sae.cli import _common, _parser

    parser = _parser("analyse", "the paper's three concept analyses of an SAE")
    _common(parser)
    parser.add_argument(
        "--sae",
        required=True,
        metavar="PATH",
        help="an SAE folder (tttlab sae train) or the paper's .pt checkpoint",
    )
    parser.add_argument(
        "--test-features",
        default=None,
        metavar="PATH",
        help="test file; default: carve --test-per-class rows per class out",
    )
    parser.add_argument("--test-per-class", type=int, default=50, help="see --test-features")
    parser.add_arguments(AnalyseConfig, dest="cfg")
    args = parser.parse_args(argv)
    folder, existed = analyse_run(
        args.sae,
        args.features,
        args.test_features,
        args.cfg,
        args.out,
        args.normalize,
        args.test_per_class,
        progress=not args.no_progress,
    )
    if existed:
        print(f"(already analysed with these settings: reporting {folder})")
    print((folder / "report.md").read_text(encoding="utf-8").split("## Settings")[0].strip())
    print(f"results: {folder}")
    return 0
