"""Checkpoint layouts: tttlab's own keys, the authors' files renamed on load, and a clear error for
any other layout."""

import pytest
import torch

from tttlab.models import CNN, LAYOUTS, make_head, recognise
from tttlab.models.layouts import key_renames


def test_tttlab_models_are_recognised_as_they_are():
    for model, kind in ((CNN(0.5), "cnn"), (make_head("linear", 50, 10), "linear"),
                        (make_head("mlp", 50, 10, hidden_dim=8), "mlp")):  # fmt: skip
        state, layout = recognise(model.state_dict())
        assert layout.kind == kind and state.keys() == model.state_dict().keys()


def test_the_authors_heads_load_into_tttlabs():
    linear = {"layer.weight": torch.randn(10, 50), "layer.bias": torch.randn(10)}
    state, layout = recognise(linear)
    head = make_head("linear", 50, 10)
    head.load_state_dict(state)  # strict: exactly tttlab's keys
    assert layout.kind == "linear" and torch.equal(head.classifier.weight, linear["layer.weight"])
    mlp = {"layer1.weight": torch.randn(8, 50), "layer1.bias": torch.randn(8),
           "layer2.weight": torch.randn(10, 8), "layer2.bias": torch.randn(10)}  # fmt: skip
    state, layout = recognise(mlp)
    make_head("mlp", 50, 10, hidden_dim=8).load_state_dict(state)
    assert layout.kind == "mlp" and "TorchMLPClassifier" in layout.name


def test_user_renames_come_first_and_unknown_layouts_list_what_is_known():
    wrapped = {f"module.{k}": v for k, v in make_head("linear", 4, 3).state_dict().items()}
    with pytest.raises(ValueError, match=r"module.classifier.bias, module.classifier.weight"):
        recognise(wrapped, where="model.pt")
    state, layout = recognise(wrapped, ("module.=",))
    assert layout.kind == "linear" and set(state) == {"classifier.weight", "classifier.bias"}
    with pytest.raises(ValueError, match="--checkpoint-keys OLD=NEW") as err:
        recognise({"fc.weight": torch.zeros(1)})
    assert all(lay.name in str(err.value) for lay in LAYOUTS)


@pytest.mark.parametrize("bad", ["layer.", "=classifier.", "a=b=c"])
def test_renames_must_read_old_equals_new(bad):
    with pytest.raises(ValueError, match="must read OLD=NEW"):
        key_renames((bad,))
