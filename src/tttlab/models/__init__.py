"""Global models: the width-scalable CNN, heads on fixed features, their training loop and files.

Every model exposes `features(x)` (the input of its last layer) and `classifier` (that layer).
"""

from tttlab.models.checkpoint import load_state, save_model
from tttlab.models.cnn import (
    CNN,
    CNNShape,
    cnn_from_state_dict,
    cnn_shape,
    live_cnn,
    reachable_widths,
    scale_for_width,
)
from tttlab.models.heads import HEAD_KINDS, LinearHead, MLPHead, head_parts, make_head
from tttlab.models.train import TrainConfig, TrainResult, extract_features, fit, predict_logits

__all__ = [
    "CNN",
    "CNNShape",
    "HEAD_KINDS",
    "LinearHead",
    "MLPHead",
    "TrainConfig",
    "TrainResult",
    "cnn_from_state_dict",
    "cnn_shape",
    "extract_features",
    "fit",
    "head_parts",
    "live_cnn",
    "load_state",
    "make_head",
    "predict_logits",
    "reachable_widths",
    "save_model",
    "scale_for_width",
]
