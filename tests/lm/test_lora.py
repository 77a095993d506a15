"""LoRA TTT: adapters on a transformers model, trained per document and removed afterwards; many
documents at once (stacked or routed adapters) give the numbers of one at a time."""

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

from tttlab.lm.config import LMTTTConfig
from tttlab.lm.lora import LoraError, lora_modules
from tttlab.lm.model import LanguageModel
from tttlab.lm.pretrained import CausalLMLogits
from tttlab.lm.ttt import bits_per_byte, doc_bits, ttt_bits

pytest.importorskip("peft")


def as_lm(hf, name: str) -> LanguageModel:
    hf.eval()
    return LanguageModel(
        name=name, module=CausalLMLogits(hf).eval(), tokenize=lambda t: [1 + b % 63 for b in
        t.encode()], bos_id=0, context=128, embeddings=[hf.get_input_embeddings().weight],
        blocks=list(hf.model.decoder.layers if hasattr(hf.model, "decoder") else hf.model.layers),
    )  # fmt: skip


@pytest.fixture(scope="module")
def llama() -> LanguageModel:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False)  # fmt: skip
    return as_lm(LlamaForCausalLM(config), "tiny-llama")


def docs(n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[0, *rng.integers(1, 64, rng.integers(10, 40)).tolist()] for _ in range(n)]


def lora(**kw) -> LMTTTConfig:
    return LMTTTConfig(**{"k": 3, "tune": "lora", "lr": 1e-2, "lora_rank": 4} | kw)


def test_lora_on_the_document_itself_lowers_its_bits_and_leaves_the_model_as_it_was(llama):
    queries = docs(4, 1)
    base = doc_bits(llama, queries)
    before = {n: type(m) for n, m in llama.module.named_modules()}
    after = ttt_bits(llama, queries, [[q] * 3 for q in queries], lora(), progress=False)
    assert (after < base).all()
    assert {n: type(m) for n, m in llama.module.named_modules()} == before  # adapters removed
    np.testing.assert_array_equal(doc_bits(llama, queries), base)  # weights untouched
    assert all(p.requires_grad for p in llama.module.parameters())


@pytest.mark.parametrize("batching", ["stacked", "routed"])
@pytest.mark.parametrize("schedule", ["sequential", "epochs"])
def test_many_documents_at_once_give_the_bits_of_one_at_a_time(llama, batching, schedule):
    queries, ns = docs(5, 2), [docs(3, 10 + i) for i in range(5)]
    n_bytes = np.array([len(q) for q in queries])
    kw = dict(lora_targets=("q", "v", "mlp", "head"), schedule=schedule, epochs=2)
    one = ttt_bits(llama, queries, ns, lora(**kw), progress=False)
    many = ttt_bits(llama, queries, ns, lora(**kw, copies=3, lora_batching=batching), False)
    assert np.abs(one - doc_bits(llama, queries)).max() > 0.1  # the adapters did something
    np.testing.assert_allclose(bits_per_byte(many, n_bytes), bits_per_byte(one, n_bytes),
                               atol=1e-5)  # fmt: skip


def test_steps_per_neighbour_repeats_each_neighbour():
    assert lora(steps_per_neighbour=2).steps() == [[0], [0], [1], [1], [2], [2]]
    assert lora(schedule="epochs", epochs=2).steps() == [[0, 1, 2], [0, 1, 2]]


def test_a_rank_above_a_layer_width_names_the_layer(llama):
    with pytest.raises(LoraError, match=r"lora_rank 40 is above the width of .*k_proj.* 16"):
        lora_modules(llama, lora(lora_rank=40, lora_targets=("q", "k")))


def test_a_target_the_model_lacks_names_the_modules_it_has():
    config = OPTConfig(vocab_size=64, hidden_size=16, ffn_dim=32, num_hidden_layers=1,
                       num_attention_heads=2, word_embed_proj_dim=16)  # fmt: skip
    opt = as_lm(OPTForCausalLM(config), "tiny-opt")
    with pytest.raises(LoraError, match="'o'.*fc1, fc2, k_proj, lm_head, out_proj, q_proj, v_proj"):
        lora_modules(opt, lora(lora_targets=("q", "o")))
    assert len(lora_modules(opt, lora(lora_targets=("q", "v")))) == 2


def test_a_ladder_gpt_is_refused_with_the_tunes_it_takes():
    from tttlab.lm.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab=64, context=48, width=32, layers=2, heads=2)).eval()
    lm = LanguageModel("gpt-tiny", model, lambda t: [1], 0, 48, [model.wte], list(model.blocks))
    with pytest.raises(LoraError, match="tune='last' or 'all'"):
        ttt_bits(lm, docs(1, 0), [docs(3, 1)], lora(), progress=False)


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(lora_targets=("q", "x")), "lora_targets"),
        (dict(lora_targets=()), "lora_targets is empty"),
        (dict(lora_rank=0), "lora_rank"),
        (dict(steps_per_neighbour=0), "steps_per_neighbour"),
        (dict(lora_batching="fused"), "lora_batching"),
    ],
)
def test_bad_lora_settings_are_refused_when_the_config_is_built(kw, message):
    with pytest.raises(ValueError, match=message):
        lora(**kw)


@pytest.mark.parametrize("tune", ["lora", "last"])
def test_bf16_holds_frozen_linears_in_bf16_with_autocasts_numbers(llama, tune, monkeypatch):
    from tttlab.lm import lora as lora_mod
    from tttlab.lm import ttt

    queries, ns = docs(3, 5), [docs(3, 20 + i) for i in range(3)]
    cfg = lora(bf16=True) if tune == "lora" else LMTTTConfig(k=3, tune="last", lr=1e-3, bf16=True)
    held = ttt_bits(llama, queries, ns, cfg, progress=False)
    for module in (lora_mod, ttt):  # plain autocast: fp32 weights cast at every matmul
        monkeypatch.setattr(module, "frozen_linears_in_bf16", lambda lm, p: nullcontext())
    np.testing.assert_array_equal(ttt_bits(llama, queries, ns, cfg, progress=False), held)
    assert all(p.dtype == torch.float32 for p in llama.module.parameters())
