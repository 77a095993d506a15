"""Runs as a pipeline of cached stages: data -> model -> features -> neighbours -> methods."""

from tttlab.pipeline.cache import StageCache, settings_key
from tttlab.pipeline.run import (
    Evaluation,
    Prepared,
    RunResult,
    evaluate,
    prepare,
    run,
    run_folder_name,
)

__all__ = [
    "Evaluation",
    "Prepared",
    "RunResult",
    "StageCache",
    "evaluate",
    "prepare",
    "run",
    "run_folder_name",
    "settings_key",
]
