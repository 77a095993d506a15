"""Global models: the width-scalable CNN, heads on fixed features, their training loop and files.

Every model exposes `features(x)` (the input of its last layer) and `classifier` (that layer).
"""

from tttlab._lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "tttlab.models.checkpoint": ["load_state", "save_model"],
        "tttlab.models.cnn": ["CNN", "cnn_from_state_dict", "live_cnn"],
        "tttlab.models.heads": ["HEAD_KINDS", "LinearHead", "MLPHead", "head_parts", "make_head"],
        "tttlab.models.train": [
            "TrainResult",
            "apply_model",
            "extract_features",
            "fit",
            "predict_logits",
        ],
        "tttlab.models.shapes": ["CNNShape", "cnn_shape", "reachable_widths", "scale_for_width"],
        "tttlab.models.config": ["TrainConfig"],
        "tttlab.models.layouts": ["LAYOUTS", "Layout", "recognise"],
    },
)
