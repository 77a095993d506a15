"""Methods scored on a test set: TTT and its baselines, as scikit-learn classifiers.

All of them take (N, d) feature rows, or a model's own inputs when given a model with
`features`/`classifier`; without a head, GlobalHead and TTTClassifier train a linear one in fit.
"""

from tttlab.methods.baselines import GlobalHead, MajorityVote, vote_fractions
from tttlab.methods.experts import ExpertsClassifier
from tttlab.methods.ttt import TTTClassifier, global_eval

__all__ = [
    "ExpertsClassifier",
    "GlobalHead",
    "MajorityVote",
    "TTTClassifier",
    "global_eval",
    "vote_fractions",
]
