"""Methods scored on a test set: TTT and its baselines, as estimators on feature matrices."""

from tttlab.methods.estimators import (
    GlobalHead,
    MajorityVote,
    TTTClassifier,
    global_eval,
    vote_fractions,
)

__all__ = ["GlobalHead", "MajorityVote", "TTTClassifier", "global_eval", "vote_fractions"]
