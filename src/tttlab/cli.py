"""The `tttlab` command line.

tttlab demo                      # Fashion-MNIST, the smallest CNN (d = 25): global vs TTT
tttlab ttt --width 192 --k 100   # any RunConfig field as a flag, or --config run.json
tttlab runs                      # the run log as a table
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from tttlab.experiment import RunConfig, run
from tttlab.results import format_table, read_run_log

_PARSERS = {"int": int, "float": float, "str": str}


def _field_type(annotation: str):
    """The converter for a RunConfig annotation such as "int | None"."""
    base = annotation.replace(" | None", "").strip()
    return _PARSERS.get(base)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field, so the CLI and the config file share one schema."""
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        help = f"default: {f.default!r}"
        if f.type == "bool":
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help
            )
        elif (conv := _field_type(str(f.type))) is not None:
            parser.add_argument(flag, type=conv, default=None, help=help)


def _config(args: argparse.Namespace, base: dict | None = None) -> RunConfig:
    values = dict(base or {})
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"no config file at {path}: check the path")
        try:
            values |= json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}): fix the file") from err
    for f in dataclasses.fields(RunConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    return RunConfig.from_dict(values)


def _run(cfg: RunConfig) -> int:
    result = run(cfg)
    print(result.table)
    print(f"results: {result.run_dir}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    rows = read_run_log(Path(args.out))
    if not rows:
        print(f"no runs logged in {args.out}/runs.csv yet: run `tttlab demo` or `tttlab ttt`")
        return 0
    print(format_table(rows[-args.last :] if args.last else rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tttlab", description="Test-time training on frozen features (arXiv 2509.24510)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="Fashion-MNIST, smallest CNN (d = 25): global head, TTT, majority vote"
    )
    demo.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    demo.add_argument("--out", default=None, help="results folder (default: runs)")
    demo.add_argument("--device", default=None, help="cpu or cuda")

    ttt = sub.add_parser("ttt", help="one TTT run; every RunConfig field is a flag")
    ttt.add_argument("--config", default=None, help="JSON file of RunConfig fields")
    _add_config_flags(ttt)

    runs = sub.add_parser("runs", help="print the run log")
    runs.add_argument("--out", default="runs", help="results folder holding runs.csv")
    runs.add_argument("--last", type=int, default=0, help="only the last N runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "runs":
            return _runs(args)
        base = {"name": "demo"} if args.command == "demo" else {}
        return _run(_config(args, base))
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"tttlab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tttlab: interrupted; no partial results were written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
