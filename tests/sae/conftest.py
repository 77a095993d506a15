import numpy as np
import pytest

from tests.threads import one_thread

one_torch_thread = pytest.fixture(scope="package", autouse=True)(one_thread)


def sparse_features(n: int = 1200, d: int = 16, concepts: int = 48, active: int = 3, seed: int = 0):
    """Rows that are sums of `active` of `concepts` unit directions (the linear representation
    hypothesis in miniature); labels are the row's strongest concept mod 4, so neighbours that
    share concepts share labels."""
    rng = np.random.default_rng(seed)
    dic = rng.normal(size=(concepts, d))
    dic /= np.linalg.norm(dic, axis=1, keepdims=True)
    idx = np.stack([rng.choice(concepts, active, replace=False) for _ in range(n)])
    acts = rng.uniform(0.5, 2.0, size=(n, active))
    X = np.einsum("na,nad->nd", acts, dic[idx]).astype(np.float32)
    y = (idx[np.arange(n), acts.argmax(1)] % 4).astype(np.int64)
    return X, y


@pytest.fixture
def feature_file(tmp_path):
    """A small .npz feature file (embeddings + labels) and its arrays."""
    X, y = sparse_features()
    path = tmp_path / "feats.npz"
    np.savez(path, embeddings=X, labels=y)
    return path, X, y
