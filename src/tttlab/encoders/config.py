"""`tttlab embed`'s settings, plain Python (the command line parses them without torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from tttlab.checks import check_choice, check_int

Encoder = Literal["efficientnet-lite0", "clip-vit-b16"]
ENCODERS: tuple[str, ...] = get_args(Encoder)


@dataclass
class EmbedConfig:
    """An image data set -> a cached feature folder, by a pretrained encoder (resumable: the same
    command continues after the last finished chunk)."""

    dataset: Literal["mnist", "fashion-mnist"] | None = None
    """An MNIST-format set, with the paper's train/val/test splits (or give --images)."""
    images: str | None = None
    """A folder with one sub-folder of images per class (or give --dataset)."""
    data_dir: str | None = None
    """Where the MNIST-format files are; default: $TTTLAB_DATA, ~/.cache/tttlab,
    /usr/share/datasets."""
    limit: int | None = None
    """At most this many images per split, stratified (quick runs)."""
    encoder: Encoder = "efficientnet-lite0"
    """efficientnet-lite0 (the packaged ImageNet weights) or clip-vit-b16 (local weights)."""
    weights: str | None = None
    """Weights file or folder (efficientnet-lite0: default the packaged weights; clip-vit-b16:
    required, a local folder or file)."""
    resolution: int | None = None
    """Input side in pixels (efficientnet-lite0: default 224, its native)."""
    batch_size: int = 64
    """Images per forward pass."""
    chunk_rows: int = 4096
    """Rows per chunk file."""
    normalize: bool = True
    """Unit-normalise every row (the paper's CLIP embeddings are unit-norm)."""
    allow_mixed: bool = False
    """--images: accept mixed sizes and grey/colour (each to RGB, resized)."""
    out: str = ""
    """The feature folder to write or resume."""
    progress: bool = True
    """Show the progress bar."""

    def __post_init__(self):
        if (self.dataset is None) == (self.images is None):
            raise ValueError("give exactly one of --dataset and --images")
        check_choice(self.encoder, "encoder", ENCODERS)
        if self.limit is not None:
            check_int(self.limit, "limit", min=1)
        if self.resolution is not None:
            check_int(self.resolution, "resolution", min=1)
        check_int(self.batch_size, "batch_size", min=1)
        check_int(self.chunk_rows, "chunk_rows", min=1)
        if not self.out:
            raise ValueError("out is required: pass --out FOLDER for the feature folder")
