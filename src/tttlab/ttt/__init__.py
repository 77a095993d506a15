"""Test-time training: the batched engine, its one-at-a-time reference, and the predictors."""

from tttlab.ttt.engine import METHODS, TTTConfig, auto_chunk_size, finetune, ttt_logits
from tttlab.ttt.heads import head_parts
from tttlab.ttt.predictors import (
    GlobalHead,
    MajorityVote,
    TTTClassifier,
    global_eval,
    vote_fractions,
)
from tttlab.ttt.reference import reference_ttt

__all__ = [
    "METHODS",
    "GlobalHead",
    "MajorityVote",
    "TTTClassifier",
    "TTTConfig",
    "auto_chunk_size",
    "finetune",
    "global_eval",
    "head_parts",
    "reference_ttt",
    "ttt_logits",
    "vote_fractions",
]
