"""Data: IDX files, the image datasets (MNIST, Fashion-MNIST, digits) and feature files, with
their splits."""

from tttlab._lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "tttlab.data.features": [
            "FeatureFileError",
            "FeatureSpec",
            "open_features",
            "prepare_features",
            "read_features",
        ],
        "tttlab.data.idx": ["IDXError", "read_idx", "write_idx"],
        "tttlab.data.noise": ["check_noise", "flip_labels"],
        "tttlab.data.mnist": [
            "DatasetContentError",
            "DatasetNotFoundError",
            "DownloadError",
            "cache_dir",
            "download_dataset",
            "find_dataset_dir",
            "read_idx_dataset",
        ],
        "tttlab.data.splits": [
            "CLASSES",
            "DATASETS",
            "Splits",
            "load_splits",
            "nested_subset",
            "per_class_subset",
            "stratified_split",
            "stratified_subset",
            "training_subset",
        ],
    },
)
