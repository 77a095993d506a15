"""The GPT ladder, trained here on the corpus pool: one shared tokenizer, then each size on a budget
of tokens per parameter (with a floor for the small sizes), so larger sizes take more steps and
none is stopped on the unigram plateau where its smaller neighbour has left it.

    tok_entry = tokenizer_entry(corpus, cache)                   # BPE + the pool's token stream
    lm = ladder_model(corpus, "1.5m", LMTrainConfig(), cache)    # trained once, then cached

Training reads random windows of the pool's token stream (documents joined, each after BOS), with
AdamW, linear warm-up and cosine decay; the learning rate shrinks as 1/sqrt(width) (wider models
want smaller steps). Checkpoints are stage-cache entries keyed by the corpus, tokenizer, shape and
training settings: any study or run finds a trained size again.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tttlab.checks import check_choice, check_int
from tttlab.files import read_json_object
from tttlab.lm.config import LADDER, GPTConfig, LMTrainConfig
from tttlab.lm.corpus import Corpus
from tttlab.lm.gpt import GPT, parameter_count
from tttlab.lm.model import LanguageModel
from tttlab.lm.tokenizer import BOS, load_tokenizer, save_tokenizer, train_tokenizer
from tttlab.pipeline.cache import Entry, StageCache
from tttlab.tensors import check_device
from tttlab.tree import from_values


def tokenizer_entry(corpus: Corpus, cache: StageCache, vocab: int = 4096) -> Entry:
    """The shared tokenizer learned on the pool, and the pool as one token stream (uint16)."""
    settings = {"corpus": corpus.key, "vocab": vocab}

    def make(folder: Path) -> dict:
        start = time.perf_counter()
        texts = [d.text for d in corpus.pool]
        tok = train_tokenizer(texts, vocab)
        save_tokenizer(tok, folder / "tokenizer.json")
        bos = tok.token_to_id(BOS)
        stream = np.fromiter(
            (t for enc in tok.encode_batch(texts) for t in (bos, *enc.ids)), dtype=np.uint16
        )
        np.save(folder / "stream.npy", stream)
        return {"seconds": time.perf_counter() - start, "tokens": int(stream.size),
                "bytes": sum(d.n_bytes for d in corpus.pool)}  # fmt: skip

    return cache.get_or_make("lm-tokenizer", settings, make)


def ladder_model(
    corpus: Corpus,
    size: str,
    cfg: LMTrainConfig,
    cache: StageCache,
    progress: bool = True,
    shape: GPTConfig | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> tuple[LanguageModel, Entry]:
    """The ladder's `size` trained on the corpus pool from `seed` (cached), as a LanguageModel on
    the CPU. `device` is where it trains; a checkpoint from either device serves both (not in
    its key)."""
    if shape is None:
        check_choice(size, "size", tuple(LADDER))
        shape = GPTConfig(**{**asdict(LADDER[size]), "vocab": cfg.vocab})
    tok_entry = tokenizer_entry(corpus, cache, cfg.vocab)
    settings = {
        "tokenizer": tok_entry.key,
        "shape": asdict(shape),
        "train": asdict(cfg) | {"seed": seed},
    }

    def make(folder: Path) -> dict:
        stream = np.load(tok_entry.file("stream.npy"), mmap_mode="r")
        model, history, seconds = train_gpt(
            shape, stream, cfg, progress, f"train {size}", device, seed
        )
        from safetensors.torch import save_file

        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors"
        )
        (folder / "gpt.json").write_text(json.dumps(asdict(shape)), encoding="utf-8")
        return {"seconds": seconds, "history": history, "parameters": model_parameters(model)}

    entry = cache.get_or_make("lm-gpt", settings, make)
    return load_gpt(entry.path, tok_entry.file("tokenizer.json"), f"gpt-{size}"), entry


def model_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_gpt(
    shape: GPTConfig,
    stream: np.ndarray,
    cfg: LMTrainConfig,
    progress: bool = True,
    desc: str = "",
    device: str = "cpu",
    seed: int = 0,
) -> tuple[GPT, list[dict], float]:
    """Train a GPT of `shape` from `seed` (its initial weights and the windows it reads) on
    random windows of `stream` on `device`; returns it (on the CPU), the loss every ~1% of the
    steps, and the seconds it took."""
    if stream.size <= cfg.seq + 1:
        raise ValueError(f"the pool has {stream.size} tokens, fewer than one window of {cfg.seq}")
    if int(stream.max()) >= shape.vocab:
        raise ValueError(
            f"the token stream has ids up to {int(stream.max())} >= vocab {shape.vocab}"
        )
    check_int(seed, "seed", min=0)
    torch.manual_seed(seed)
    check_device(device)
    device = torch.device(device)
    model = GPT(shape).to(device)
    decay = [p for p in model.parameters() if p.dim() == 2 and p is not model.wpe]
    rest = [p for p in model.parameters() if not (p.dim() == 2 and p is not model.wpe)]
    lr = cfg.lr * math.sqrt(128 / shape.width)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": rest, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95),
    )  # fmt: skip
    steps = cfg.steps(model_parameters(model))
    warm = max(1, int(cfg.warmup * steps))
    rng = np.random.default_rng(seed)
    offsets = np.arange(cfg.seq + 1)
    history, every, start = [], max(1, steps // 100), time.perf_counter()
    model.train()
    for step in tqdm(range(steps), desc or "train", disable=not progress):
        scale = (
            (step + 1) / warm
            if step < warm
            else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        )
        for group in opt.param_groups:
            group["lr"] = lr * scale
        starts = rng.integers(0, stream.size - cfg.seq - 1, cfg.batch)
        window = torch.from_numpy(stream[starts[:, None] + offsets].astype(np.int64)).to(device)
        with torch.autocast(device.type, torch.bfloat16, enabled=cfg.bf16):
            logits = model(window[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), window[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % every == 0 or step == steps - 1:
            history.append({"step": step, "loss": loss.item()})
    model.eval()
    return model.cpu(), history, time.perf_counter() - start


def load_gpt(folder: str | Path, tokenizer_path: str | Path, name: str) -> LanguageModel:
    """A trained GPT's checkpoint and the ladder's tokenizer, as a LanguageModel."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    fix = f"delete {folder} (a cache entry) so the GPT is trained again"
    try:
        shape = from_values(GPTConfig, read_json_object(folder / "gpt.json", "a GPT's shape", fix))
        state = load_file(folder / "model.safetensors")
    except (ValueError, OSError, SafetensorError) as err:
        raise ValueError(f"{folder}: {err}: {fix}") from None
    stored = sum(t.numel() for t in state.values())
    if parameter_count(shape) != stored:  # checked before gpt.json's shape sizes an allocation
        raise ValueError(
            f"{folder}: gpt.json describes {parameter_count(shape)} weights but "
            f"model.safetensors holds {stored}: {fix}"
        )
    model = GPT(shape)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{folder}: the weights do not fit gpt.json ({err}): {fix}") from None
    model.eval()
    tok = load_tokenizer(tokenizer_path)
    return LanguageModel(
        name=name,
        module=model,
        tokenize=lambda text: tok.encode(text).ids,
        bos_id=tok.token_to_id(BOS),
        context=shape.context,
        embeddings=[model.wte, model.wpe],
        blocks=list(model.blocks),
        final=[model.lnf],  # the output head is the tied token embedding
        source={"trained": str(folder), "shape": asdict(shape)},
    )
