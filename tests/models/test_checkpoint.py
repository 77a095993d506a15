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


class RunSettings:
    """A custom object that a careless torch.save pickles next to the weights."""

    lr = 0.1


def test_truncated_safetensors_names_the_file_and_the_fix(tmp_path):
    path = save_model(make_head("mlp", 8, 3), tmp_path / "head.safetensors", {"kind": "mlp"})
    data = path.read_bytes()
    for cut in (4, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"head\.safetensors is truncated or corrupt.*re-save"):
            load_state(path)


def test_truncated_torch_file_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "head.pt"
    torch.save(make_head("mlp", 8, 3).state_dict(), path)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 5):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"head\.pt is truncated or corrupt.*re-save"):
            load_state(path)


def test_pickled_objects_are_refused_without_suggesting_weights_only_false(tmp_path):
    path = tmp_path / "full.pt"
    torch.save({"weight": torch.zeros(2), "settings": RunSettings()}, path)
    with pytest.raises(ValueError, match="loads weights only, never arbitrary pickles") as info:
        load_state(path)
    assert "torch.save(model.state_dict(), path)" in str(info.value)
    assert "weights_only=False" not in str(info.value)


def test_non_tensor_entries_are_named(tmp_path):
    torch.save({"weight": torch.zeros(2), "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match=r"entries 'step' \(int\) are not tensors"):
        load_state(tmp_path / "mixed.pt")
    torch.save({"model": {"weight": torch.zeros(2)}}, tmp_path / "nested.pt")
    with pytest.raises(ValueError, match="under one key"):
        load_state(tmp_path / "nested.pt")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_nan_and_inf_weights_are_refused_at_load(tmp_path, suffix):
    head = make_head("mlp", 8, 3)
    state = head.state_dict()
    key = next(iter(state))
    with torch.no_grad():
        state[key].view(-1)[:2] = torch.tensor([float("nan"), float("inf")])
    path = tmp_path / f"diverged{suffix}"
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_model(head, path, {})
    with pytest.raises(ValueError, match=rf"diverged.* NaN or inf .*'{key}' \(2 of"):
        load_state(path)
