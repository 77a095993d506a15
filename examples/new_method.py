"""A new method in the registry: it is scored beside the global head and TTT on the same
neighbours, and appears in the run's table, metrics, run log and report.

    python examples/new_method.py            # digits with a linear head, in about a minute

A method is an estimator (scikit-learn style: fit, then predict_proba or decision_function that
take the test points' shared neighbours) and one `register` call saying how to build it from a
run's config and what its output depends on (its cache key).
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from tttlab import Config, Method, register, run
from tttlab.retrieval import KNNIndex


class DistanceWeightedVote(ClassifierMixin, BaseEstimator):
    """The labels of the k nearest training points, each weighted by 1 / distance."""

    def __init__(self, k: int = 50):
        self.k = k

    def fit(self, X, y) -> DistanceWeightedVote:
        self.X_ = np.ascontiguousarray(X, dtype=np.float32).reshape(len(X), -1)
        self.classes_, self.y_ = np.unique(y, return_inverse=True)
        return self

    def predict_proba(self, X, neighbours: np.ndarray | None = None) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32).reshape(len(X), -1)
        if neighbours is None:  # a run passes the neighbours it found once for every method
            neighbours = KNNIndex().fit(self.X_).search(X, self.k)[1]
        distance = np.linalg.norm(self.X_[neighbours] - X[:, None, :], axis=2)
        weight = 1.0 / (distance + 1e-6)
        proba = np.zeros((len(X), len(self.classes_)))
        for j in range(neighbours.shape[1]):
            np.add.at(proba, (np.arange(len(X)), self.y_[neighbours[:, j]]), weight[:, j])
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X, neighbours: np.ndarray | None = None) -> np.ndarray:
        return self.classes_[self.predict_proba(X, neighbours).argmax(axis=1)]


register(
    Method(
        "weighted",
        "a vote of the k nearest training points, weighted by 1 / distance",
        build=lambda cfg, classifier: DistanceWeightedVote(k=cfg.majority_k),
        settings=lambda cfg: {"k": cfg.majority_k},
        needs_k=lambda cfg: cfg.majority_k,
        output="proba",
    )
)


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs", help="results folder")
    args = parser.parse_args(argv)
    cfg = Config.from_dict(
        {
            "data": {"dataset": "digits"},
            "model": {"model": "linear"},
            "ttt": {"k": 20},
            "methods": {"methods": ["global", "ttt", "majority", "weighted"]},
            "run": {"out": args.out, "progress": False},
        }
    )
    result = run(cfg)
    print(result.table)
    print(f"results: {result.run_dir}")
    return result


if __name__ == "__main__":
    main()
