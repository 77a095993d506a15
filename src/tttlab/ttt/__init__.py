"""Test-time training: the batched engine and the one-at-a-time loop it is tested against."""

from tttlab.ttt.engine import (
    METHODS,
    NonFiniteError,
    TTTConfig,
    auto_chunk_size,
    finetune,
    point_bytes,
    ttt_grid,
    ttt_logits,
)
from tttlab.ttt.reference import reference_ttt

__all__ = [
    "METHODS",
    "NonFiniteError",
    "TTTConfig",
    "auto_chunk_size",
    "finetune",
    "point_bytes",
    "reference_ttt",
    "ttt_grid",
    "ttt_logits",
]
