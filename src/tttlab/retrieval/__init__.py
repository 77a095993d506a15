"""Retrieval: the k nearest training points of each test point in feature space."""

from tttlab.retrieval.knn import KNNIndex, RetrievalConfig, knn, search_memory_bytes

__all__ = ["KNNIndex", "RetrievalConfig", "knn", "search_memory_bytes"]
