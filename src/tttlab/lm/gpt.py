"""A small GPT (pre-norm, learned positions, tied embeddings), written once so that it runs one
model or many stacked copies of it: every weight may carry a leading copies axis C.

    model = GPT(LADDER["1.5m"])
    logits_BTV = model(ids_BT)                           # one model
    stacked = stack_copies(model, names, copies=8)       # 8 copies of the weights in `names`
    logits_CTV = forward(model, ids_CT, stacked)         # copy c reads sequence c

The stacked path is how TTT fine-tunes many documents at once (`tttlab.lm.ttt`): one forward and
backward over C copies, each with its own weights and Adam state, the same numbers as C runs one
after another (Adam is elementwise and each copy's loss only reaches its own weights).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tttlab.checks import check_int
from tttlab.lm.config import GPTConfig


class Norm(nn.Module):
    """LayerNorm's weight and bias (applied by `_norm`)."""

    def __init__(self, d: int):
        super().__init__()
        self.w, self.b = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))


class Linear(nn.Module):
    """A weight [out, in] and bias (applied by `_linear`, which also takes stacked copies)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.w, self.b = nn.Parameter(torch.empty(d_out, d_in)), nn.Parameter(torch.zeros(d_out))


class Block(nn.Module):
    """Pre-norm attention then MLP; its weights are read by `_block`."""

    def __init__(self, d: int):
        super().__init__()
        self.ln1, self.qkv, self.proj = Norm(d), Linear(d, 3 * d), Linear(d, d)
        self.ln2, self.fc, self.out = Norm(d), Linear(d, 4 * d), Linear(4 * d, d)


class GPT(nn.Module):
    """ids_BT -> logits_BTV. Initialised as GPT-2 (normal 0.02, residual projections scaled by
    1/sqrt(2 * layers)); seeded by the caller (torch.manual_seed)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Parameter(torch.empty(cfg.vocab, cfg.width))
        self.wpe = nn.Parameter(torch.empty(cfg.context, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg.width) for _ in range(cfg.layers))
        self.lnf = Norm(cfg.width)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                residual = name.endswith(("proj.w", "out.w"))
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.layers) if residual else 0.02)

    def forward(self, ids_BT: torch.Tensor) -> torch.Tensor:
        return forward(self, ids_BT)


def forward(
    model: GPT, ids_CT: torch.Tensor, stacked: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """Logits of `model`, with the weights named in `stacked` replaced by stacked copies [C, ...]:
    row c of ids_CT is read by copy c. Without `stacked`, every row reads the one model."""
    p = dict(model.named_parameters())
    p.update(stacked or {})
    C, T = ids_CT.shape
    if T > model.cfg.context:
        raise ValueError(f"{T} tokens exceed the model's context window of {model.cfg.context}")
    wte, wpe = p["wte"], p["wpe"]
    tok = (
        F.embedding(ids_CT, wte)
        if wte.dim() == 2
        else wte[torch.arange(C, device=ids_CT.device)[:, None], ids_CT]
    )
    x = tok + wpe[..., :T, :]
    for i in range(model.cfg.layers):
        pre = f"blocks.{i}."
        x = _block({k[len(pre) :]: v for k, v in p.items() if k.startswith(pre)},
                   x, model.cfg.heads)  # fmt: skip
    x = _norm(x, p["lnf.w"], p["lnf.b"])
    return x @ wte.transpose(-1, -2)


def _vec(v: torch.Tensor) -> torch.Tensor:
    """A bias or norm weight, [d] or stacked [C, d], broadcast over the sequence axis."""
    return v if v.dim() == 1 else v.unsqueeze(1)


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return x @ w.transpose(-1, -2) + _vec(b)


def _norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:]) * _vec(w) + _vec(b)


def _block(p: dict[str, torch.Tensor], x_CTD: torch.Tensor, heads: int) -> torch.Tensor:
    C, T, D = x_CTD.shape
    h = _linear(_norm(x_CTD, p["ln1.w"], p["ln1.b"]), p["qkv.w"], p["qkv.b"])
    q, k, v = (t.view(C, T, heads, D // heads).transpose(1, 2) for t in h.split(D, dim=-1))
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(C, T, D)
    x_CTD = x_CTD + _linear(a, p["proj.w"], p["proj.b"])
    h = F.gelu(
        _linear(_norm(x_CTD, p["ln2.w"], p["ln2.b"]), p["fc.w"], p["fc.b"]), approximate="tanh"
    )
    return x_CTD + _linear(h, p["out.w"], p["out.b"])


def stack_copies(model: GPT, names: list[str], copies: int) -> dict[str, torch.Tensor]:
    """`copies` trainable copies of the named weights, each [copies, *shape], equal to the model."""
    check_int(copies, "copies", min=1)
    p = dict(model.named_parameters())
    return {
        n: p[n].detach().unsqueeze(0).repeat(copies, *([1] * p[n].dim())).requires_grad_()
        for n in names
    }


def parameter_count(cfg: GPTConfig) -> int:
    """Weights of a GPT of this shape, embeddings included (the tied head counts once)."""
    d = cfg.width
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    return cfg.vocab * d + cfg.context * d + cfg.layers * block + 2 * d
