"""TTT of language models on neighbours: stacked copies give the numbers of one document at a
time, the model is reset after every document, and TTT on a document's own text helps."""

import numpy as np
import pytest
import torch

from tttlab.lm.gpt import GPT, GPTConfig, forward, parameter_count, stack_copies
from tttlab.lm.model import LanguageModel, trainable
from tttlab.lm.ttt import LMTTTConfig, bits_per_byte, doc_bits, ttt_bits


def tiny_lm(seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab=64, context=48, width=32, layers=2, heads=2)).eval()
    return LanguageModel(
        name="tiny", module=model, tokenize=lambda t: [b % 63 + 1 for b in t.encode()], bos_id=0,
        context=48, embeddings=[model.wte, model.wpe], blocks=list(model.blocks), final=[model.lnf],
    )  # fmt: skip


def docs(n: int, seed: int, lo: int = 10, hi: int = 40) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[0, *rng.integers(1, 64, rng.integers(lo, hi)).tolist()] for _ in range(n)]


def test_parameter_count_matches_the_module():
    cfg = GPTConfig(vocab=100, context=20, width=24, layers=3, heads=3)
    assert sum(p.numel() for p in GPT(cfg).parameters()) == parameter_count(cfg)


def test_stacked_forward_is_each_copy_alone():
    lm = tiny_lm()
    ids = torch.tensor(docs(3, 1, 20, 21))
    copies = stack_copies(lm.module, ["blocks.1.fc.w", "wte"], 3)
    with torch.no_grad():
        copies["wte"][1] += 0.1 * torch.randn_like(copies["wte"][1])  # copy 1 differs
        out = forward(lm.module, ids, copies)
        ref0 = lm.module(ids[:1])
    assert torch.allclose(out[0], ref0[0], atol=1e-5)
    assert not torch.allclose(out[1], lm.module(ids[1:2])[0], atol=1e-3)


@pytest.mark.parametrize(
    "schedule,tune", [("sequential", "all"), ("epochs", "last"), ("sequential", "no-embeddings")]
)
def test_stacked_ttt_gives_the_numbers_of_one_document_at_a_time(schedule, tune):
    lm = tiny_lm()
    queries, ns = docs(5, 2), [docs(4, 10 + i) for i in range(5)]
    cfg = dict(k=4, lr=3e-3, schedule=schedule, epochs=3, tune=tune)
    one = ttt_bits(lm, queries, ns, LMTTTConfig(**cfg, copies=1), progress=False)
    many = ttt_bits(lm, queries, ns, LMTTTConfig(**cfg, copies=3), progress=False)
    np.testing.assert_allclose(many, one, rtol=1e-4)
    base = doc_bits(lm, queries)
    assert np.abs(one - base).max() > 1e-3  # TTT changed something
    np.testing.assert_allclose(doc_bits(lm, queries), base)  # and the model was reset


def test_ttt_on_the_document_itself_lowers_its_bits():
    lm = tiny_lm()
    queries = docs(3, 4)
    cfg = LMTTTConfig(k=5, lr=3e-3, copies=3)
    after = ttt_bits(lm, queries, [[q] * 5 for q in queries], cfg, progress=False)
    assert (after < doc_bits(lm, queries) - 1).all()


def test_tune_modes_pick_the_right_weights():
    lm = tiny_lm()
    everything = trainable(lm, "all")
    assert len(everything) == len(list(lm.module.parameters()))
    no_emb = {id(p) for p in trainable(lm, "no-embeddings")}
    assert id(lm.module.wte) not in no_emb and id(lm.module.blocks[0].qkv.w) in no_emb
    last = {id(p) for p in trainable(lm, "last", last_layers=1)}
    assert id(lm.module.blocks[1].fc.w) in last and id(lm.module.blocks[0].fc.w) not in last
    with pytest.raises(ValueError, match="has 2 blocks"):
        trainable(lm, "last", last_layers=3)


def test_bad_input_is_named():
    lm = tiny_lm()
    with pytest.raises(ValueError, match="fewer than k=4"):
        ttt_bits(lm, docs(2, 0), [docs(4, 1), docs(3, 2)], LMTTTConfig(k=4), progress=False)
    with pytest.raises(ValueError, match="context window of 48"):
        lm.encode("x" * 100)
    with pytest.raises(ValueError, match="lr"):
        LMTTTConfig(lr=-1)
    assert bits_per_byte(np.array([8.0]), np.array([4]))[0] == 2.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("copies", [1, 3])
def test_ttt_on_cuda_gives_the_numbers_of_the_cpu(copies):
    lm = tiny_lm()
    queries, ns = docs(5, 2), [docs(4, 10 + i) for i in range(5)]
    cfg = LMTTTConfig(k=4, lr=3e-3, copies=copies)
    cpu = ttt_bits(lm, queries, ns, cfg, progress=False)
    lm.module.to("cuda")
    gpu = ttt_bits(lm, queries, ns, cfg, progress=False)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3)
    np.testing.assert_allclose(doc_bits(lm, queries), doc_bits(tiny_lm(), queries), rtol=1e-3)
    assert next(lm.module.parameters()).is_cuda  # TTT left the model where it was
