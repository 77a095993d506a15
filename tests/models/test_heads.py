"""Heads on fixed features: TTT tunes `classifier` on `features(x)`, nothing else."""

import pytest
import torch
from torch import nn

from tttlab.models import CNN, LinearHead, MLPHead, make_head


@pytest.mark.parametrize("model", [make_head("linear", 8, 3), make_head("mlp", 8, 3), CNN(0.35)])
def test_every_model_is_classifier_on_features(model):
    model.eval()
    x = torch.randn(5, 1, 28, 28) if isinstance(model, CNN) else torch.randn(5, 8)
    assert isinstance(model.classifier, nn.Linear)
    assert torch.allclose(model(x), model.classifier(model.features(x)))


def test_linear_head_features_are_its_input():
    head = make_head("linear", 8, 3)
    assert isinstance(head, LinearHead)
    x = torch.randn(4, 8)
    assert torch.equal(head.features(x), x)
    assert head.classifier.in_features == 8 and head.classifier.out_features == 3


def test_mlp_head_dropout_only_in_training():
    head = make_head("mlp", 8, 3, hidden_dim=16, dropout=0.5)
    assert isinstance(head, MLPHead)
    x = torch.randn(64, 8)
    head.eval()
    assert head.features(x).shape == (64, 16)
    assert torch.equal(head.features(x), head.features(x))
    head.train()
    assert not torch.equal(head.features(x), head.features(x))


def test_unknown_head_kind_names_the_choices():
    with pytest.raises(ValueError, match=r"use one of \('linear', 'mlp'\)"):
        make_head("transformer", 8, 3)
    with pytest.raises(ValueError, match="dropout"):
        make_head("mlp", 8, 3, dropout=1.0)
