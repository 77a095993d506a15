"""TTT on your own features with the scikit-learn API: a linear head, then TTT and a majority
vote of neighbours, each scored on held-out rows.

    python examples/ttt_on_your_features.py features.npz   # arrays `embeddings` (N x d), `labels`
    python examples/ttt_on_your_features.py                # scikit-learn's digits, as an .npz

Any model's embeddings work: an N x d float matrix and N integer labels (.npz, .npy with its
labels file, .safetensors, a torch file, or a folder of such chunks; `tttlab.data.read_features`
reads them all).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from tttlab import GlobalHead, MajorityVote, TTTClassifier
from tttlab.data import read_features


def digits_npz(path: Path) -> Path:
    """scikit-learn's 8x8 digits as a feature file, standing in for your embeddings."""
    X, y = load_digits(return_X_y=True)
    np.savez(path, embeddings=(X / 16).astype(np.float32), labels=y)
    return path


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("features", nargs="?", help="a feature file (default: digits as .npz)")
    parser.add_argument("--k", type=int, default=50, help="neighbours per test point")
    parser.add_argument("--test-size", type=float, default=0.2, help="share held out")
    args = parser.parse_args(argv)

    path = Path(args.features) if args.features else digits_npz(Path("digits_features.npz"))
    X, y = read_features(path)  # checked: finite rows, labels that match them
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=args.test_size, stratify=y, random_state=0
    )

    head = GlobalHead(train_epochs=20).fit(X_train, y_train)  # a linear head on your features
    ttt = TTTClassifier(head.head_, k=args.k, epochs=50, lr=0.01).fit(X_train, y_train)
    vote = MajorityVote(k=args.k).fit(X_train, y_train)
    scores = {
        "global": head.score(X_test, y_test),
        "ttt": ttt.score(X_test, y_test),  # each test row gets its own fine-tuned head
        "majority": vote.score(X_test, y_test),
    }
    print(f"{path}: {len(X_train)} training rows, {len(X_test)} test rows, d = {X.shape[1]}")
    for name, accuracy in scores.items():
        print(f"{name:<9}{100 * accuracy:6.2f}%")
    return scores


if __name__ == "__main__":
    main()
