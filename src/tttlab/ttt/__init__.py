"""Test-time training: the batched engine and the one-at-a-time loop it is tested against."""

from tttlab._lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "tttlab.ttt.engine": [
            "auto_chunk_size",
            "finetune",
            "point_bytes",
            "ttt_grid",
            "ttt_logits",
        ],
        "tttlab.ttt.reference": ["reference_ttt"],
        "tttlab.ttt.config": ["SCHEDULES", "TTTConfig"],
        "tttlab.checks": ["NonFiniteError"],
    },
)
