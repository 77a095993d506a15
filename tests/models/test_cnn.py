"""The CNN's size axis: one size_scale sets kernels, channels and the feature width d."""

import pytest
import torch

from tttlab.models import (
    CNN,
    cnn_from_state_dict,
    cnn_shape,
    live_cnn,
    reachable_widths,
    scale_for_width,
)

# size_scale -> (kernel1, kernel2, channels1, channels2, d, parameters with 10 classes)
ARCHITECTURES = {
    0.35: (3, 3, 1, 1, 25, 280),
    0.5: (5, 3, 2, 2, 50, 600),
    1.0: (5, 5, 4, 12, 192, 3246),
    1.9: (5, 5, 8, 30, 480, 11048),
    4.0: (5, 5, 16, 72, 1152, 40818),
}


def released_state_dict(scale: float, num_classes: int = 10) -> dict[str, torch.Tensor]:
    """A plain dict of tensors named like the checkpoints released with the paper."""
    k1, k2, c1, c2, d = cnn_shape(scale)
    return {
        "feature_extractor.0.weight": torch.randn(c1, 1, k1, k1),
        "feature_extractor.0.bias": torch.randn(c1),
        "feature_extractor.3.weight": torch.randn(c2, c1, k2, k2),
        "feature_extractor.3.bias": torch.randn(c2),
        "classifier.weight": torch.randn(num_classes, d),
        "classifier.bias": torch.randn(num_classes),
    }


@pytest.mark.parametrize("scale", ARCHITECTURES)
def test_architecture_table(scale):
    k1, k2, c1, c2, d, params = ARCHITECTURES[scale]
    assert cnn_shape(scale) == (k1, k2, c1, c2, d)
    model = CNN(scale)
    assert model.feature_width == d
    assert sum(p.numel() for p in model.parameters()) == params
    x = torch.randn(3, 1, 28, 28)
    assert model.features(x).shape == (3, d)
    assert torch.allclose(model(x), model.classifier(model.features(x)))


def test_widths_span_25_to_1152_and_round_trip():
    widths = reachable_widths()
    assert widths[0] == 25 and widths[-1] == 1152
    for d in widths:
        assert cnn_shape(scale_for_width(d)).feature_width == d


def test_scale_for_width_prefers_the_papers_scales():
    assert scale_for_width(25) == 0.35
    assert scale_for_width(50) == 0.5
    assert scale_for_width(192) == 1.0
    assert scale_for_width(1152) == 4.0


def test_unreachable_width_lists_nearby_widths():
    with pytest.raises(ValueError, match=r"nearby reachable widths: \[80, 96, 112, 128\]"):
        scale_for_width(100)


def test_too_small_image_is_rejected():
    with pytest.raises(ValueError, match="too small"):
        cnn_shape(1.0, image_size=12)


def test_released_checkpoint_loads_strictly():
    state = released_state_dict(1.0)
    model = cnn_from_state_dict(state, width=192, num_classes=10)
    assert model.size_scale == 1.0
    assert torch.equal(model.classifier.weight, state["classifier.weight"])
    CNN(1.0).load_state_dict(state, strict=True)


def test_checkpoint_shapes_pick_the_scale():
    # d = 50 comes from a 3x3 first kernel at 0.45 and from a 5x5 one at 0.5.
    assert cnn_from_state_dict(released_state_dict(0.45)).shape.kernel1 == 3
    assert cnn_from_state_dict(released_state_dict(0.5)).size_scale == 0.5
    three_classes = cnn_from_state_dict(released_state_dict(0.35, num_classes=3))
    assert three_classes.classifier.out_features == 3


def test_wrong_width_checkpoint_names_the_fix():
    expected = r"feature width 192 \(classifier.weight is 10×192\) but width 25 .* pass width=192"
    with pytest.raises(ValueError, match=expected):
        cnn_from_state_dict(released_state_dict(1.0), width=25)
    with pytest.raises(ValueError, match="pass num_classes=10"):
        cnn_from_state_dict(released_state_dict(1.0), num_classes=100)


def test_missing_and_extra_keys_are_listed():
    state = released_state_dict(1.0)
    state["feature_extractor.6.weight"] = state.pop("classifier.bias")
    expected = (
        r"missing keys \['classifier.bias'\], unexpected keys \['feature_extractor.6.weight'\]"
    )
    with pytest.raises(ValueError, match=expected):
        cnn_from_state_dict(state)


def test_live_cnn_redraws_a_dead_initialisation():
    torch.manual_seed(0)
    images = torch.randn(256, 1, 28, 28)
    dead_at_seed = next(
        s
        for s in range(50)
        if (torch.manual_seed(s), (CNN(0.35).features(images) > 0).float().mean() < 0.01)[1]
    )
    model, redrawn = live_cnn(0.35, images, seed=dead_at_seed)
    assert redrawn >= 1
    assert (model.features(images) > 0).float().mean() >= 0.01
    again, _ = live_cnn(0.35, images, seed=dead_at_seed)
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True)
    )
