"""Data: IDX files, the image datasets (MNIST, Fashion-MNIST, digits) and feature files, with
their splits."""

from tttlab._lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "tttlab.data.features": [
            "FeatureFileError",
            "FeatureSpec",
            "FeatureSplits",
            "open_features",
            "prepare_features",
        ],
        "tttlab.data.idx": ["IDXError", "read_idx", "write_idx"],
        "tttlab.data.images": [
            "CLASSES",
            "DATASETS",
            "DatasetContentError",
            "DatasetNotFoundError",
            "DownloadError",
            "ImageSplits",
            "cache_dir",
            "download_dataset",
            "find_dataset_dir",
            "load_splits",
            "nested_subset",
            "stratified_split",
        ],
    },
)
