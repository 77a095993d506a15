"""Studies: lists of small work units over the pipeline, run once each in any shard, collected."""

from tttlab._lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "tttlab.studies.units": [
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
        ],
    },
)
