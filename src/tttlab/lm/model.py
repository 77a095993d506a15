"""One interface for every language model the task scores and fine-tunes: the GPT ladder trained
here and pretrained models loaded from packages (SmolLM2's GGUF file through transformers).

    lm = load_gpt(folder)                      # or load_pretrained("smollm2-135m")
    ids = lm.encode("some text")               # token ids, BOS first, ready to score
    logits_BTV = lm.module(ids_BT)             # next-token logits
    params = trainable(lm, "last", last_layers=2)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from tttlab.checks import check_choice, check_int
from tttlab.lm.config import TUNE_CHOICES, Tune


@dataclass
class LanguageModel:
    """A causal language model with what TTT needs to know about its parts."""

    name: str
    """Short, file-name-safe, e.g. "gpt-d128-l4" or "smollm2-135m"."""
    module: nn.Module
    """ids_BT (long) -> logits_BTV (float); eval-mode, no dropout."""
    tokenize: Callable[[str], list[int]]
    """Text -> token ids, no special tokens added."""
    bos_id: int
    """Prepended to every document, so its first token is predicted too."""
    context: int
    """The longest sequence (BOS included) the model takes."""
    embeddings: list[nn.Parameter]
    """Token (and position) embeddings: frozen by tune="no-embeddings"."""
    blocks: list[nn.Module]
    """The transformer blocks, first to last: tune="last" trains the last few."""
    final: list[nn.Module] = field(default_factory=list)
    """What follows the blocks (final norm, an untied output head): trained by tune="last"."""
    source: dict = field(default_factory=dict)
    """Where the weights came from (package, version, file), recorded in results."""

    def encode(self, text: str) -> list[int]:
        """BOS then the text's tokens; refuses text that does not fit the context window."""
        ids = [self.bos_id, *self.tokenize(text)]
        if len(ids) > self.context:
            raise ValueError(
                f"a document of {len(text.encode('utf-8'))} bytes is {len(ids)} tokens for "
                f"{self.name}, longer than its context window of {self.context}: cut the corpus "
                "into shorter documents (`tttlab lm corpus --doc-bytes`) or use a model with a "
                "longer context"
            )
        if len(ids) < 2:
            raise ValueError(f"an empty document has nothing to score for {self.name}")
        return ids

    @property
    def parameters(self) -> int:
        """Every weight, embeddings included (the x axis of the size study)."""
        return sum(p.numel() for p in self.module.parameters())


def trainable(lm: LanguageModel, tune: Tune = "all", last_layers: int = 1) -> list[nn.Parameter]:
    """The parameters TTT updates: all; all but the embeddings (a tied output head is the
    embedding, so it stays frozen too); or the last `last_layers` blocks and what follows them."""
    check_choice(tune, "tune", TUNE_CHOICES)
    check_int(last_layers, "last_layers", min=1)
    if tune == "lora":
        raise ValueError("tune='lora' trains adapters, not the model's weights: see tttlab.lm.lora")
    if tune == "all":
        chosen = list(lm.module.parameters())
    elif tune == "no-embeddings":
        frozen = {id(p) for p in lm.embeddings}
        chosen = [p for p in lm.module.parameters() if id(p) not in frozen]
    else:
        if last_layers > len(lm.blocks):
            raise ValueError(
                f"--last-layers {last_layers} but {lm.name} has {len(lm.blocks)} blocks: choose "
                f"1..{len(lm.blocks)}, or --tune all"
            )
        modules = [*lm.blocks[-last_layers:], *lm.final]
        chosen = [p for m in modules for p in m.parameters()]
    seen: set[int] = set()
    unique = [p for p in chosen if not (id(p) in seen or seen.add(id(p)))]
    if not unique:
        raise ValueError(f"--tune {tune} leaves no parameter of {lm.name} to train")
    return unique


def freeze_all_but(lm: LanguageModel, params: list[nn.Parameter]) -> None:
    """requires_grad only on `params`, so backward skips the frozen rest."""
    chosen = {id(p) for p in params}
    for p in lm.module.parameters():
        p.requires_grad_(id(p) in chosen)


@torch.no_grad()
def snapshot(params: list[nn.Parameter]) -> list[torch.Tensor]:
    """Copies of `params`, to restore a fresh model after each document's TTT."""
    return [p.detach().clone() for p in params]


@torch.no_grad()
def restore(params: list[nn.Parameter], saved: list[torch.Tensor]) -> None:
    for p, s in zip(params, saved, strict=True):
        p.copy_(s)
