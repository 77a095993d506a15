"""Retrieval: the k nearest training points of each test point in feature space."""

from tttlab.retrieval.knn import KNNIndex, knn

__all__ = ["KNNIndex", "knn"]
