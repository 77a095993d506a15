"""Studies: lists of small work units over the pipeline, run once each in any shard, collected."""

from tttlab.studies.units import (
    RunReport,
    Status,
    Unit,
    UnitsFailed,
    collect,
    grid,
    open_study,
    resolve_shard,
    run_units,
    select_shard,
    status,
    unit_file,
    unit_id,
)

__all__ = [
    "RunReport",
    "Status",
    "Unit",
    "UnitsFailed",
    "collect",
    "grid",
    "open_study",
    "resolve_shard",
    "run_units",
    "select_shard",
    "status",
    "unit_file",
    "unit_id",
]
