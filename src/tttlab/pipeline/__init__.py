"""Runs as a pipeline of cached stages: data -> model -> features -> neighbours -> methods."""

from tttlab.pipeline.cache import StageCache, settings_key
from tttlab.pipeline.run import RunResult, run, run_folder_name

__all__ = [
    "RunResult",
    "StageCache",
    "run",
    "run_folder_name",
    "settings_key",
]
