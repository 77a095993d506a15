"""`tttlab embed` once its flags have parsed (`tttlab.cli`)."""

from __future__ import annotations

from typing import Any

from tttlab.atomic import Interrupted
from tttlab.encoders.backbones import build_encoder
from tttlab.encoders.extract import embed as embed_source
from tttlab.encoders.extract import folder_source, mnist_source


def main(parsed: dict[str, Any]) -> int:
    """`tttlab embed`: a feature folder, and the command that runs TTT on it."""
    e = parsed["embed"]
    encoder = build_encoder(e.encoder, e.weights, e.resolution)
    if e.dataset:
        source = mnist_source(e.dataset, e.data_dir, e.limit)
    else:
        source = folder_source(e.images, e.allow_mixed)
    try:
        out = embed_source(source, encoder, e.out, e.batch_size, e.chunk_rows,
                           normalize=e.normalize, progress=e.progress)  # fmt: skip
    except KeyboardInterrupt as err:
        raise Interrupted(
            f"interrupted; {e.out} keeps its finished chunks (the chunk in flight is lost): the "
            "same command continues after the last one"
        ) from err
    splits = [s.name for s in source.splits]
    print(
        f"{encoder.name} ({encoder.dim}-d, {encoder.resolution} px) features of "
        f"{sum(len(s) for s in source.splits)} images: {out}"
    )
    if splits == ["train", "val", "test"]:
        print(
            f"next: tttlab ttt --features {out}/train --val-features {out}/val "
            f"--test-features {out}/test"
        )
    else:
        print(f"next: tttlab ttt --features {out}/all")
    return 0
