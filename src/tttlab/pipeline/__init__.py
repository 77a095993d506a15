"""Runs as a pipeline of cached stages: data -> model -> features -> neighbours -> methods."""

from tttlab._lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "tttlab.pipeline.cache": ["StageCache", "settings_key"],
        "tttlab.pipeline.runner": [
            "Evaluation",
            "Prepared",
            "RunResult",
            "evaluate",
            "prepare",
            "run",
            "run_folder_name",
        ],
    },
)
