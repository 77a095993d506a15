"""tttlab: test-time training on frozen features.

For each test input: retrieve its nearest training neighbours in feature space, fine-tune the
head on just those neighbours, then predict (arXiv 2509.24510).

    from tttlab import TTTClassifier
    pred = TTTClassifier(k=50).fit(train_features, train_labels).predict(test_features)
"""

from tttlab.config import Config
from tttlab.methods import GlobalHead, MajorityVote, TTTClassifier, global_eval
from tttlab.methods.registry import METHODS, Method, register
from tttlab.pipeline import RunResult, run
from tttlab.retrieval import KNNIndex, RetrievalConfig
from tttlab.ttt import TTTConfig, finetune, reference_ttt, ttt_logits

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "Config",
    "GlobalHead",
    "KNNIndex",
    "MajorityVote",
    "Method",
    "RetrievalConfig",
    "RunResult",
    "TTTClassifier",
    "TTTConfig",
    "finetune",
    "global_eval",
    "reference_ttt",
    "register",
    "run",
    "ttt_logits",
]
