"""Concept space: an SAE's sparse codes, a linear head on them, neighbours by cosine between codes,
and TTT in concept space on the concepts a neighbourhood uses.

    codes, recon = encode_rows(sae, X_ND)               # k indices and activations per row
    probs_BC, kept_B, active_B = concept_ttt(W_CH, b_C, codes, y, queries, nbr_BK, cfg, "learned")

Codes stay sparse (k indices and values per row): a linear head on codes is an embedding bag,
code-space neighbours come from a sparse product, and TTT in concept space runs on the concepts
active in the neighbourhood or the test point only (the other columns get zero gradient, so this
is exact; a test checks it against the engine on dense codes).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tttlab.sae.config import AnalyseConfig
from tttlab.sae.model import SparseCoder


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
        """N x latents, zero but for the k active concepts of each row."""
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


def cosine_in_concept_space(
    codes: SparseCodes, q: SparseCodes, nbr_BK: np.ndarray, H: int
) -> np.ndarray:
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


def _concept_ttt_chunk(
    weight_CH: torch.Tensor,
    bias_C: torch.Tensor,
    pool: SparseCodes,
    pool_y: torch.Tensor,
    q: SparseCodes,
    nbr_BK: torch.Tensor,
    cfg: AnalyseConfig,
    mode: str,
    H: int,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """`concept_ttt` on one chunk of queries, with the chunk's concepts gathered per point."""
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
