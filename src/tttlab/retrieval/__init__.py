"""Retrieval: the k nearest training points of each test point in feature space."""

from tttlab._lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "tttlab.retrieval.index": ["KNNIndex", "knn", "search_memory_bytes"],
        "tttlab.retrieval.config": ["SPACES", "RetrievalConfig"],
    },
)
