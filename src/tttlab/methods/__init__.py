"""Methods scored on a test set: TTT and its baselines, as scikit-learn classifiers.

All of them take (N, d) feature rows, or a model's own inputs when given a model with
`features`/`classifier`; without a head, GlobalHead and TTTClassifier train a linear one in fit.
"""

from tttlab._lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "tttlab.methods.baselines": ["GlobalHead", "MajorityVote", "vote_fractions"],
        "tttlab.methods.cache": ["CacheClassifier"],
        "tttlab.methods.experts": ["ExpertsClassifier"],
        "tttlab.methods.ttt": ["TTTClassifier", "global_eval"],
    },
)
