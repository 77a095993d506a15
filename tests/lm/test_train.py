"""The ladder's training budget: tokens per parameter above a floor, so a larger size takes more
steps; a tiny ladder trains in seconds and its larger size scores better."""

import pytest

from tttlab.lm.config import LMTrainConfig
from tttlab.lm.corpus import load_corpus
from tttlab.lm.gpt import GPTConfig
from tttlab.lm.train import ladder_model
from tttlab.lm.ttt import bits_per_byte, doc_bits
from tttlab.pipeline.cache import StageCache

from .test_study import write_corpus


def test_the_budget_is_tokens_per_parameter_above_a_floor():
    cfg = LMTrainConfig(tokens_per_parameter=2, tokens=10_000, seq=100, batch=10)
    assert cfg.budget(1_000) == 10_000 and cfg.budget(50_000) == 100_000
    assert cfg.steps(1_000) == 10 and cfg.steps(50_000) == 100
    assert LMTrainConfig(tokens_per_parameter=0, tokens=10_000).budget(10**9) == 10_000
    with pytest.raises(ValueError, match="tokens_per_parameter"):
        LMTrainConfig(tokens_per_parameter=-1)


def test_a_tiny_ladder_gives_the_larger_size_more_steps_and_lower_bits(tmp_path):
    corpus = load_corpus(write_corpus(tmp_path / "corpus", per_topic=30))
    cache = StageCache(tmp_path / "cache")
    cfg = LMTrainConfig(tokens_per_parameter=0.2, tokens=2048, seq=32, batch=4, vocab=300)
    test = corpus.test
    bpb, steps = [], []
    for width, layers in ((16, 1), (48, 2)):
        shape = GPTConfig(vocab=300, context=256, width=width, layers=layers, heads=2)
        lm, entry = ladder_model(corpus, f"w{width}", cfg, cache, progress=False, shape=shape)
        steps.append(entry.info["history"][-1]["step"] + 1)
        assert steps[-1] == cfg.steps(lm.parameters)
        bits = doc_bits(lm, [lm.encode(d.text) for d in test])
        bpb.append(bits_per_byte(bits, [d.n_bytes for d in test]).mean())
    assert steps[1] > steps[0]
    assert bpb[1] < bpb[0] - 0.05, (bpb, steps)
