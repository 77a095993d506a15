"""tttlab: test-time training on frozen features.

For each test input: retrieve its nearest training neighbours in feature space, fine-tune the
head on just those neighbours, then predict (arXiv 2509.24510).

    from tttlab import TTTClassifier
    pred = TTTClassifier(k=50).fit(train_features, train_labels).predict(test_features)
"""

from tttlab import cpu

cpu.choose_openmp()  # before anything imports torch: libgomp reads its wait policy once, on load

from tttlab._lazy import exports  # noqa: E402

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "tttlab.config": ["Config"],
        "tttlab.methods": ["GlobalHead", "MajorityVote", "TTTClassifier", "global_eval"],
        "tttlab.methods.registry": ["METHODS", "Method", "register"],
        "tttlab.pipeline": ["RunResult", "run"],
        "tttlab.retrieval": ["KNNIndex", "RetrievalConfig"],
        "tttlab.ttt": ["TTTConfig", "finetune", "reference_ttt", "ttt_logits"],
    },
)
