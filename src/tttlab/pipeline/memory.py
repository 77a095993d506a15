"""How much memory a run will need, stated and checked before any work.

The largest parts at ImageNet scale are the neighbour pool (read through a memory map, but every
page is touched by an exact search; with --space concepts also the SAE's codes, one column per
latent), the search's per-batch temporaries and the TTT engine's chunk of heads. A run that would
not fit is refused with the figure and what to change.
"""

from __future__ import annotations

from tttlab.config import Config
from tttlab.memory import MemoryEstimate, available_bytes
from tttlab.methods.registry import METHODS
from tttlab.retrieval import search_memory_bytes
from tttlab.sae.model import load_config
from tttlab.ttt import auto_chunk_size, point_bytes


def estimate(cfg: Config, n_train: int, n_test: int, d_in: int, classes: int) -> MemoryEstimate:
    """The peak memory of `cfg`'s run on a pool of `n_train` rows of `d_in` inputs."""
    m = cfg.model
    d = {"cnn": m.width, "linear": d_in, "mlp": m.hidden}[m.model]
    k = max(METHODS[name].needs_k(cfg) for name in cfg.methods.methods)
    device = cfg.run.device
    # an SAE's dense codes, searched in place of the features (--space concepts)
    searched = load_config(cfg.retrieval.sae).latents if cfg.retrieval.sae else d
    parts = {
        "pool": 4 * n_train * d,
        # the finiteness check of the training inputs (an MLP's features stream to the cache)
        "training": n_train * d_in,
        "search": search_memory_bytes(n_train, searched, n_test, k, cfg.retrieval, device=device)
        if k
        else 0,
        "scores": 4 * n_test * classes * len(cfg.methods.methods),
    }
    if cfg.retrieval.sae and k:
        parts["concepts"] = 4 * n_train * searched  # memory-mapped, but every page is searched
    if "ttt" in cfg.methods.methods or "experts" in cfg.methods.methods:
        t = cfg.ttt
        chunk = t.chunk_size or auto_chunk_size(t.k, d, classes, device)
        parts["ttt"] = chunk * point_bytes(t.k, d, classes)
    return MemoryEstimate(parts, available_bytes())


RUN_FIXES = (
    "Use an approximate index (--kind ivf), fewer queries per search batch "
    "(--retrieval.batch-size), a smaller TTT chunk (--chunk-size), a smaller pool (--fraction or "
    "--limit), or a machine with more memory"
)
