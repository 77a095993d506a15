"""Retrieval: the k nearest training points of each test point in feature space."""

from tttlab.retrieval.knn import KNNIndex, RetrievalConfig, knn

__all__ = ["KNNIndex", "RetrievalConfig", "knn"]
