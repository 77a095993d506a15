"""Test-time training: the batched engines (a linear head; any model's last layers) and the
one-at-a-time loop they are tested against."""

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
        "tttlab.ttt.tail": ["Tail", "count_layers", "split_tail", "tail_finetune", "tail_logits"],
        "tttlab.ttt.config": ["SCHEDULES", "TTTConfig"],
        "tttlab.checks": ["NonFiniteError"],
    },
)
