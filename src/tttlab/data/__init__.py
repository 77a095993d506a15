"""Data: IDX files and the image datasets (MNIST, Fashion-MNIST, digits) with their splits."""

from tttlab.data.idx import IDXError, read_idx, write_idx
from tttlab.data.images import (
    CLASSES,
    DATASETS,
    DatasetContentError,
    DatasetNotFoundError,
    DownloadError,
    ImageSplits,
    cache_dir,
    download_dataset,
    find_dataset_dir,
    load_splits,
    nested_subset,
    stratified_split,
)

__all__ = [
    "CLASSES",
    "DATASETS",
    "DatasetContentError",
    "DatasetNotFoundError",
    "DownloadError",
    "IDXError",
    "ImageSplits",
    "cache_dir",
    "download_dataset",
    "find_dataset_dir",
    "load_splits",
    "nested_subset",
    "read_idx",
    "stratified_split",
    "write_idx",
]
