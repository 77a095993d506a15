"""Checkpoints: safetensors plus JSON metadata, and the paper's plain torch.save state dicts."""

import pytest
import torch

from tttlab.models import CNN, cnn_from_state_dict, load_state, make_head, save_model


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = CNN(1.0)
    meta = {"kind": "cnn", "size_scale": 1.0, "num_classes": 10, "history": [0.5, 0.8]}
    path = save_model(model, tmp_path / "cnn.safetensors", meta)
    assert [p.name for p in tmp_path.iterdir()] == ["cnn.safetensors"]  # no temp file left

    state, loaded_meta = load_state(path)
    assert loaded_meta == meta
    restored = cnn_from_state_dict(state, width=192)
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value)


def test_loads_torch_save_state_dicts(tmp_path):
    head = make_head("mlp", 8, 3)
    torch.save(head.state_dict(), tmp_path / "head.pth")
    state, meta = load_state(tmp_path / "head.pth")
    assert meta == {}
    make_head("mlp", 8, 3).load_state_dict(state, strict=True)


def test_bad_files_and_meta_are_explained(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_state(tmp_path / "list.pt")
    with pytest.raises(ValueError, match="unknown suffix"):
        (tmp_path / "w.bin").write_bytes(b"")
        load_state(tmp_path / "w.bin")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_state(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        save_model(make_head("linear", 2, 2), tmp_path / "h.safetensors", {"cfg": object()})
