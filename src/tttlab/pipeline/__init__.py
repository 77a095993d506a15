"""Runs as a pipeline of cached stages: data -> model -> features -> neighbours -> methods."""

from tttlab.pipeline.cache import StageCache, settings_key
from tttlab.pipeline.run import RunResult, run, run_folder_name
from tttlab.pipeline.stages import NonFiniteScoresError

__all__ = [
    "NonFiniteScoresError",
    "RunResult",
    "StageCache",
    "run",
    "run_folder_name",
    "settings_key",
]
