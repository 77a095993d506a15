"""Data: IDX files, the image datasets (MNIST, Fashion-MNIST, digits) and feature files, with
their splits."""

from tttlab.data.features import (
    FeatureFileError,
    FeatureSpec,
    FeatureSplits,
    open_features,
    prepare_features,
)
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
    "FeatureFileError",
    "FeatureSpec",
    "FeatureSplits",
    "IDXError",
    "ImageSplits",
    "cache_dir",
    "download_dataset",
    "find_dataset_dir",
    "load_splits",
    "nested_subset",
    "open_features",
    "prepare_features",
    "read_idx",
    "stratified_split",
    "write_idx",
]
