"""Runs as a pipeline of cached stages: data -> model -> features -> neighbours -> methods."""

from tttlab.pipeline.cache import StageCache, settings_key
from tttlab.pipeline.run import Evaluation, RunResult, evaluate, run, run_folder_name

__all__ = [
    "Evaluation",
    "RunResult",
    "StageCache",
    "evaluate",
    "run",
    "run_folder_name",
    "settings_key",
]
