"""The memory a run needs is stated before any work, and a run that cannot fit is refused."""

import pytest

from tttlab.config import Config, DataConfig, ModelConfig, RunConfig
from tttlab.memory import available_bytes
from tttlab.pipeline import memory, run
from tttlab.retrieval import RetrievalConfig

GiB = 2**30


def test_an_imagenet_sized_run_fits_in_8_gib_and_a_huge_search_batch_does_not():
    cfg = Config(data=DataConfig(features="clip/"), model=ModelConfig(model="linear"))
    est = memory.estimate(cfg, n_train=1_231_167, n_test=50_000, d_in=512, classes=1000)
    assert 2.3 * GiB < est.parts["pool"] < 2.4 * GiB
    assert est.total < 8 * GiB
    assert "this run needs about" in est.describe() and "pool 2.35" in est.describe()
    cfg.retrieval = RetrievalConfig(backend="torch", batch_size=65536)
    huge = memory.estimate(cfg, n_train=1_231_167, n_test=50_000, d_in=512, classes=1000)
    assert huge.parts["search"] > est.parts["search"]


def test_a_run_that_cannot_fit_is_refused_with_the_figure_and_the_fixes(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 10 * 2**20)  # a 10 MiB machine
    cfg = Config(data=DataConfig(dataset="digits"), model=ModelConfig(model="linear"),
                 run=RunConfig(out=str(tmp_path), progress=False))  # fmt: skip
    with pytest.raises(MemoryError, match=r"needs about .* GiB .* 0\.0 GiB available: not "
                       r"enough\. Use an approximate index \(--kind ivf\)"):  # fmt: skip
        run(cfg)
    assert not (tmp_path / "cache" / "model").exists(), "refused before any training"


def test_available_memory_is_read_from_the_machine():
    free = available_bytes()
    assert free is None or free > 0
