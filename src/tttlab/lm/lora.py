"""LoRA test-time training of a transformers language model (the paper's method): per document,
low-rank adapters on the chosen linear layers are trained on its neighbours while every weight of
the model stays frozen, the document is scored, and the adapters are reset.

    cfg = LMTTTConfig(k=10, tune="lora", lora_rank=8, lora_targets=("q", "v"), lr=1e-3)
    bits = lora_ttt_bits(lm, queries, neighbours, cfg)       # via tttlab.lm.ttt.ttt_bits

One document at a time goes through peft (one adapter, reset per document). `copies` > 1 trains
that many documents at once, each with its own adapter, in one forward and backward: "routed" is
peft's per-sample adapter routing (`adapter_names`), "stacked" keeps each layer's adapters as
stacked tensors A_CRI, B_COR added by batched matmul. Every adapter starts from the same seeded A
(B = 0), so a document's bits never depend on which group it ran in.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tttlab.lm.config import LORA_TARGETS, LMTTTConfig
from tttlab.lm.model import LanguageModel
from tttlab.lm.scoring import frozen_linears_in_bf16, model_device, train_then_score

MODULES: dict[str, tuple[str, ...]] = {
    "q": ("q_proj",), "k": ("k_proj",), "v": ("v_proj",), "o": ("o_proj",),
    "mlp": ("gate_proj", "up_proj", "down_proj"), "head": ("lm_head",),
}  # fmt: skip
"""Each target's linear modules, by the last part of their name (Llama, Qwen2, Gemma naming)."""


class LoraError(ValueError):
    """LoRA cannot be put where it was asked; the message names what the model has."""


def transformers_model(lm: LanguageModel) -> nn.Module:
    """The transformers causal LM inside `lm`, or a LoraError for models that have none."""
    inner = getattr(lm.module, "model", None)
    if inner is None or not hasattr(inner, "config"):
        raise LoraError(
            f"tune='lora' puts peft adapters on a transformers model's linear layers; {lm.name} "
            "is not one (the ladder GPTs are written here): tune it with tune='last' or 'all', "
            "or choose a pretrained model"
        )
    return inner


def lora_modules(lm: LanguageModel, cfg: LMTTTConfig) -> dict[str, nn.Linear]:
    """Full name -> linear module of every layer cfg.lora_targets names, in model order; refuses
    a target the model lacks (naming the linear modules it has) and a rank above a layer's width."""
    model = transformers_model(lm)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    kinds = sorted({n.rsplit(".", 1)[-1] for n in linears})
    chosen: dict[str, nn.Linear] = {}
    for target in cfg.lora_targets:
        found = {n: m for n, m in linears.items() if n.rsplit(".", 1)[-1] in MODULES[target]}
        if not found:
            raise LoraError(
                f"lora target {target!r} ({' '.join(MODULES[target])}) is not in {lm.name}, "
                f"whose linear modules are {', '.join(kinds)}: choose targets among "
                f"{', '.join(t for t in LORA_TARGETS if any(n.rsplit('.', 1)[-1] in MODULES[t] for n in linears))}"  # noqa: E501
            )
        chosen |= found
    narrow = min(chosen.items(), key=lambda nm: min(nm[1].in_features, nm[1].out_features))
    width = min(narrow[1].in_features, narrow[1].out_features)
    if cfg.lora_rank > width:
        raise LoraError(
            f"lora_rank {cfg.lora_rank} is above the width of {narrow[0]} "
            f"({narrow[1].in_features} -> {narrow[1].out_features}) in {lm.name}: choose a rank "
            f"of at most {width}"
        )
    return {n: chosen[n] for n in linears if n in chosen}


def initial_a(modules: dict[str, nn.Linear], rank: int, seed: int) -> dict[str, torch.Tensor]:
    """Each module's starting A [rank, in] (peft's init: Kaiming-uniform, a = sqrt(5)), seeded
    per module so every document and every batching starts from the same adapters."""
    out = {}
    for i, (name, m) in enumerate(modules.items()):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        bound = 1 / math.sqrt(m.in_features)  # kaiming_uniform_(a=sqrt(5)) on [rank, in]
        a = (torch.rand(rank, m.in_features, generator=gen) * 2 - 1) * bound
        out[name] = a.to(m.weight.device)
    return out


def lora_ttt_bits(
    lm: LanguageModel,
    queries: Sequence[Sequence[int]],
    neighbours: Sequence[Sequence[Sequence[int]]],
    cfg: LMTTTConfig,
    progress: bool = True,
    desc: str = "lora ttt",
) -> np.ndarray:
    """Bits of each query after LoRA TTT on its neighbours (already checked and cut to k and the
    context), `cfg.copies` documents at a time; the model is left as it was."""
    modules = lora_modules(lm, cfg)
    a0 = initial_a(modules, cfg.lora_rank, cfg.seed)
    frozen = [p.requires_grad for p in lm.module.parameters()]
    for p in lm.module.parameters():
        p.requires_grad_(False)
    group = min(cfg.copies, len(queries))
    # Padding costs compute: group documents whose neighbours have like lengths.
    order = np.argsort([sum(map(len, ns)) for ns in neighbours], kind="stable")
    out = np.empty(len(queries))
    bar = tqdm(total=len(queries), desc=desc, unit="doc", disable=not progress)
    # Every linear weight is frozen: under bf16 hold them in bf16 (autocast's numbers, less work).
    bf16 = frozen_linears_in_bf16(lm, []) if cfg.bf16 else contextlib.nullcontext()
    try:
        with bf16:
            if group > 1 and cfg.lora_batching == "stacked":
                for s in range(0, len(queries), group):
                    at = order[s : s + group]
                    out[at] = _stacked(lm, modules, a0, [queries[i] for i in at],
                                       [neighbours[i] for i in at], cfg)  # fmt: skip
                    bar.update(len(at))
            else:
                names = [f"doc{c}" for c in range(group)]
                with _peft_adapters(lm, modules, a0, names, cfg) as (peft_model, adapters):
                    for s in range(0, len(queries), group):
                        at = order[s : s + group]
                        out[at] = _routed(lm, peft_model, adapters, names[: len(at)], a0,
                                          [queries[i] for i in at],
                                          [neighbours[i] for i in at], cfg)  # fmt: skip
                        bar.update(len(at))
    finally:
        for p, flag in zip(lm.module.parameters(), frozen, strict=True):
            p.requires_grad_(flag)
        bar.close()
    return out


# ---------------------------------------------------------------- peft (one at a time, routed)


@contextlib.contextmanager
def _peft_adapters(
    lm: LanguageModel,
    modules: dict[str, nn.Linear],
    a0: dict[str, torch.Tensor],
    names: list[str],
    cfg: LMTTTConfig,
) -> Iterator[tuple[nn.Module, dict[str, list[tuple[str, nn.Parameter, nn.Parameter]]]]]:
    """peft adapters `names` on lm's transformers model, removed on exit (the model's own modules
    put back); yields the PeftModel and, per adapter, (module, A, B) of each adapted layer."""
    from peft import LoraConfig, get_peft_model

    model = transformers_model(lm)
    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_scale * cfg.lora_rank,
        target_modules=sorted(modules),  # full names: exactly these layers
        lora_dropout=0.0,
        bias="none",
    )
    # peft injects into `model` in place; lm.module keeps calling the same object.
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours
        warnings.filterwarnings("ignore", category=FutureWarning)
        peft_model = get_peft_model(model, config, adapter_name=names[0]).eval()  # no dropout
    try:
        for name in names[1:]:
            peft_model.add_adapter(name, config)
        layers = {n: m for n, m in model.named_modules() if n in modules}
        adapters = {
            a: [(n, layers[n].lora_A[a].weight, layers[n].lora_B[a].weight) for n in modules]
            for a in names
        }
        yield peft_model, adapters
    finally:
        peft_model.unload()


def _routed(
    lm: LanguageModel,
    peft_model: nn.Module,
    adapters: dict[str, list[tuple[str, nn.Parameter, nn.Parameter]]],
    names: list[str],
    a0: dict[str, torch.Tensor],
    queries: Sequence[Sequence[int]],
    ns: Sequence[Sequence[Sequence[int]]],
    cfg: LMTTTConfig,
) -> list[float]:
    """C documents, adapter `names[c]` trained on query c's neighbours: one document through
    peft's active adapter, several through its per-sample routing (`adapter_names`)."""
    device = model_device(lm)
    params = []
    with torch.no_grad():
        for name in names:
            for module, A, B in adapters[name]:
                A.copy_(a0[module])
                B.zero_()
                params += [A.requires_grad_(), B.requires_grad_()]
    routed = {"adapter_names": names} if len(adapters) > 1 else {}

    def logits(ids_BT: torch.Tensor) -> torch.Tensor:
        return peft_model(input_ids=ids_BT, use_cache=False, **routed).logits

    return train_then_score(logits, params, queries, ns, cfg.steps(), cfg.lr, lm.bos_id,
                            cfg.bf16, device)  # fmt: skip


# ---------------------------------------------------------------- stacked adapters


def _stacked(
    lm: LanguageModel,
    modules: dict[str, nn.Linear],
    a0: dict[str, torch.Tensor],
    queries: Sequence[Sequence[int]],
    ns: Sequence[Sequence[Sequence[int]]],
    cfg: LMTTTConfig,
) -> list[float]:
    """C documents at once: each adapted layer adds scale * (x_CTI @ A_CRI^T) @ B_COR^T, row c of
    the batch through adapter c (forward hooks, removed afterwards)."""
    device, C, scale = model_device(lm), len(queries), cfg.lora_scale
    A = {n: a0[n].unsqueeze(0).repeat(C, 1, 1).requires_grad_() for n in modules}
    B = {n: torch.zeros(C, m.out_features, cfg.lora_rank, device=device, requires_grad=True)
         for n, m in modules.items()}  # fmt: skip

    def hook(name: str):
        def add(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            x_CTI = args[0]
            a_CRI, b_COR = A[name][: x_CTI.shape[0]], B[name][: x_CTI.shape[0]]
            x_CTI = x_CTI.to(a_CRI.dtype) if not torch.is_autocast_enabled() else x_CTI
            return out + (torch.bmm(torch.bmm(x_CTI, a_CRI.mT), b_COR.mT) * scale).to(out.dtype)

        return add

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        return train_then_score(lm.module, [*A.values(), *B.values()], queries, ns,
                                cfg.steps(), cfg.lr, lm.bos_id, cfg.bf16, device)  # fmt: skip
    finally:
        for h in handles:
            h.remove()
