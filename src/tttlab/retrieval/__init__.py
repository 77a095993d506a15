"""Retrieval: each test point's neighbours among the training points in feature space, by a
distance (l2, cosine, inner product) and a rule (the k nearest, or SIFT's choice)."""

from tttlab._lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "tttlab.retrieval.index": ["KNNIndex", "knn", "pair_distances", "search_memory_bytes"],
        "tttlab.retrieval.config": ["SPACES", "RetrievalConfig"],
        "tttlab.retrieval.sift": ["SiftSelection", "posterior_variance", "sift_select"],
    },
)
