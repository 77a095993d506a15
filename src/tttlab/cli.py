"""The `tttlab` command line, generated from the config tree (`tttlab.config.Config`).

tttlab demo                          # Fashion-MNIST, the smallest CNN (d = 25): global vs TTT
tttlab ttt --width 192 --k 100       # any setting is a flag; `tttlab ttt --help` lists them all
tttlab ttt --config run.json         # or a JSON file of settings (a run's config.json works)
tttlab runs                          # the run log as a table
tttlab study model-size --executor slurm --partition gpu   # a study as a Slurm job array
"""

from __future__ import annotations

import argparse
import difflib
import sys
import warnings
from pathlib import Path

import simple_parsing

from tttlab.atomic import explain_os_error, terminate_as_interrupt
from tttlab.config import Config, RunConfig, SlurmConfig
from tttlab.pipeline import run
from tttlab.results import InterruptedAfterCommit, format_table, read_run_log
from tttlab.studies import UnitsFailed
from tttlab.studies.executors import last_slurm
from tttlab.studies.run import report_study, resume_study, run_study, study_progress
from tttlab.studies.scaling import StudyConfig

COMMANDS = {
    "demo": "Fashion-MNIST, the smallest CNN (d = 25): global head, TTT, majority vote",
    "ttt": "one run: global head, TTT and baselines on a test set; every setting is a flag",
    "study": "a study (model-size, dataset-size, experts, global-eval) as shardable work units",
    "runs": "print the run log",
    "sae": "sparse autoencoder on a feature file: `sae train`, `sae analyse` (concept analyses)",
    "embed": "images (MNIST-format set or class folders) -> a cached feature file, by an encoder",
    "simulate": "the paper's theory as a simulator: when does specialisation beat a global model?",
    "lm": "the language task: `lm corpus` (Debian documentation -> a Pile-like text corpus)",
}
STUDY_HELP = {
    "model-size": "global head, TTT and majority vote across CNN widths (the paper's settings)",
    "dataset-size": "the same across nested per-class fractions of the training set",
    "experts": "a mixture of experts from 1 to many experts, beside TTT and the global head",
    "global-eval": "local TTT heads scored on their neighbourhood and on the whole test set",
    "lm-size": "language models (a GPT ladder, SmolLM2): TTT's gain in bits per byte vs size",
    "report": "rebuild a study folder's table, plot and report (refuses while units are missing)",
    "status": "a study folder's units: done, queued or running on Slurm, failed (and why), missing",
    "resume": "run (or submit to Slurm) only a study folder's failed and missing units; report",
}


def flag_parser(prog: str, description: str) -> simple_parsing.ArgumentParser:
    """A parser that turns dataclass fields into flat `--dash-case` flags, as every tttlab
    command does."""
    return simple_parsing.ArgumentParser(
        prog=prog,
        description=description,
        add_option_string_dash_variants=simple_parsing.DashVariant.DASH,
        argument_generation_mode=simple_parsing.ArgumentGenerationMode.FLAT,
        add_config_path_arg=False,
        allow_abbrev=False,  # `--lr` must not silently mean `--lr-schedule`
    )


def _config_parser(
    command: str, defaults: Config, description: str
) -> simple_parsing.ArgumentParser:
    parser = flag_parser(f"tttlab {command}", description)
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="JSON file of settings, nested by section as in a run's config.json; flags override",
    )
    parser.add_arguments(Config, dest="cfg", default=defaults)
    return parser


def parse_config(command: str, argv: list[str]) -> Config:
    """The run's Config from `--config FILE` (if any), then the flags on top, all validated."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    base = Config.from_file(known.config) if known.config else Config()
    if command == "demo" and not known.config:
        base = Config(run=RunConfig(name="demo"))
    parser = _config_parser(command, base, COMMANDS[command])
    args = parse_flags(parser, argv)
    if (args.cfg.slurm.executor, args.cfg.slurm.workers) != ("local", 1):
        raise ValueError(
            f"tttlab {command} is one pipeline run in this process: --executor and --workers "
            "apply to `tttlab study` (its work units)"
        )
    return args.cfg


def parse_flags(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse `argv`, refusing unknown flags with the flags they probably meant."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise ValueError(_unknown_flags_message(parser, unknown))
    return args


def _unknown_flags_message(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """Name the unknown flags, with the section-prefixed flags they probably meant."""
    options = [o for action in parser._actions for o in action.option_strings]
    hints = []
    for flag in (u for u in unknown if u.startswith("--")):
        same = [o for o in options if o.endswith("." + flag[2:])]
        close = same or difflib.get_close_matches(flag, options, n=2)
        if close:
            hints.append(f"{flag}: did you mean {' or '.join(close)}?")
    hint = ("; " + "; ".join(hints)) if hints else ""
    return f"unrecognized arguments: {' '.join(unknown)}{hint} (`tttlab ... --help` lists all)"


def _study(argv: list[str]) -> int:
    """`tttlab study STUDY [flags]`: run this shard's unfinished units, then report if complete."""
    if not argv or argv[0] not in STUDY_HELP:
        lines = "\n".join(f"  {name:<13} {text}" for name, text in STUDY_HELP.items())
        print(f"usage: tttlab study {{{','.join(STUDY_HELP)}}} ...\n\n{lines}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    study, rest = argv[0], argv[1:]
    if study == "report":
        parser = argparse.ArgumentParser(prog="tttlab study report", description=STUDY_HELP[study])
        parser.add_argument("folder", help="the study folder")
        folder = Path(parser.parse_args(rest).folder)
        print(f"report: {report_study(folder)}")
        return 0
    if study == "status":
        return _study_status(rest)
    if study == "resume":
        return _study_resume(rest)
    if study == "lm-size":
        return _lm_study(rest)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(rest)
    base = Config.from_file(known.config) if known.config else Config()
    parser = _config_parser(f"study {study}", base, STUDY_HELP[study])
    parser.add_arguments(StudyConfig, dest="study")
    _shard_flags(parser)
    args = parse_flags(parser, rest)
    done = run_study(study, args.study, args.cfg, args.shard_id, args.num_shards)
    print(done.summary)
    return 0


def _shard_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shard-id", type=int, default=None, help=SHARD_HELP)
    parser.add_argument("--num-shards", type=int, default=None, help=SHARD_HELP)


def _lm_study(argv: list[str]) -> int:
    """`tttlab study lm-size [flags]`: this shard's unfinished models, the report once complete."""
    from tttlab.lm.study import LMStudy, run_lm_study

    parser = flag_parser("tttlab study lm-size", STUDY_HELP["lm-size"])
    parser.add_arguments(LMStudy, dest="cfg")
    _shard_flags(parser)
    args = parse_flags(parser, argv)
    print(run_lm_study(args.cfg, args.shard_id, args.num_shards).summary)
    return 0


def _study_status(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tttlab study status", description=STUDY_HELP["status"])
    parser.add_argument("folder", help="the study folder")
    folder = Path(parser.parse_args(argv).folder)
    now = study_progress(folder)
    total = len(now.done) + len(now.running) + len(now.failed) + len(now.missing)
    print(f"study: {folder} ({total} units)")
    print(
        f"done: {len(now.done)}, running: {len(now.running)}, failed: {len(now.failed)}, "
        f"missing: {len(now.missing)}"
    )
    for unit_id, where in now.running.items():
        print(f"  running  {unit_id}: {where}")
    for unit_id, why in now.failed.items():
        print(f"  failed   {unit_id}: {why}")
    for unit_id in now.missing:
        print(f"  missing  {unit_id}")
    if now.todo:
        print(f"next: tttlab study resume {folder}")
    elif not now.running:
        print(f"complete: tttlab study report {folder}")
    return 0


def _study_resume(argv: list[str]) -> int:
    """`tttlab study resume DIR [--executor ...]`: where units run defaults to the last Slurm
    submission's settings (or --config FILE's slurm section); flags override."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("folder", nargs="?")
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        defaults = Config.from_file(known.config).slurm
    elif known.folder and not {"-h", "--help"} & set(argv):
        defaults = last_slurm(known.folder)
    else:
        defaults = SlurmConfig()
    parser = flag_parser("tttlab study resume", STUDY_HELP["resume"])
    parser.add_argument("folder", help="the study folder")
    parser.add_argument("--config", default=None, metavar="FILE", help="take its slurm section")
    parser.add_arguments(SlurmConfig, dest="slurm", default=defaults)
    args = parse_flags(parser, argv)
    print(resume_study(Path(args.folder), args.slurm).summary)
    return 0


SHARD_HELP = (
    "run one slice of the units (round-robin); default from SLURM_ARRAY_TASK_ID and "
    "SLURM_ARRAY_TASK_COUNT when set, else all units"
)


# ---- tttlab simulate (tttlab.theory) ------------------------------------------------------


def _simulate(argv: list[str]) -> int:
    """`tttlab simulate [flags]`: this shard's unfinished sweep units, the report once complete,
    and with --bridge a features file placed on the regime map."""
    from tttlab.data.features import read_features
    from tttlab.theory.bridge import bridge_report, read_ttt_gain
    from tttlab.theory.concepts import Sim
    from tttlab.theory.sweeps import SimulateConfig, run_simulation

    parser = flag_parser("tttlab simulate", COMMANDS["simulate"])
    parser.add_arguments(Sim, dest="sim")
    parser.add_arguments(SimulateConfig, dest="sweep")
    _shard_flags(parser)
    parser.add_argument(
        "--bridge", default=None, metavar="FEATURES",
        help="features to place on the regime map: a feature file or folder (as --features)",
    )  # fmt: skip
    parser.add_argument("--bridge-k", type=int, default=50, help="--bridge: neighbours per point")
    parser.add_argument(
        "--bridge-run", default=None, metavar="RUN_DIR",
        help="--bridge: a tttlab run folder on the same features, for TTT's measured gain",
    )  # fmt: skip
    args = parse_flags(parser, argv)
    if args.bridge is not None:  # a bad features file fails before any unit runs
        X, y = read_features(args.bridge)
        gain = read_ttt_gain(args.bridge_run) if args.bridge_run else None
    done = run_simulation(args.sim, args.sweep, args.shard_id, args.num_shards)
    print(done.summary)
    if args.bridge is not None:
        if done.report is None:
            print("bridge: waiting for the other shards (rerun with --bridge once all are done)")
        else:
            name = Path(args.bridge).stem
            print(f"bridge: {bridge_report(done.folder, X, y, name, args.bridge_k, gain)}")
    return 0


def _runs(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tttlab runs", description=COMMANDS["runs"])
    parser.add_argument("--out", default="runs", help="results folder holding runs.csv")
    parser.add_argument("--last", type=int, default=0, help="only the last N runs")
    args = parser.parse_args(argv)
    rows = read_run_log(args.out)
    if not rows:
        print(f"no runs logged in {args.out}/runs.csv yet: run `tttlab demo` or `tttlab ttt`")
        return 0
    print(format_table(rows[-args.last :] if args.last else rows))
    return 0


def _sae(argv: list[str]) -> int:
    """`tttlab sae train|analyse`: its parser lives with the SAE (tttlab.sae.cli)."""
    from tttlab.sae.cli import main as sae_main

    return sae_main(argv)


def _embed(argv: list[str]) -> int:
    """`tttlab embed`: its parser lives with the encoders (tttlab.encoders.cli)."""
    from tttlab.encoders.cli import main as embed_main

    return embed_main(argv)


def _lm(argv: list[str]) -> int:
    """`tttlab lm ...`: its parsers live with the language task (tttlab.lm.cli)."""
    from tttlab.lm.cli import main as lm_main

    return lm_main(argv)


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tttlab",
        description="Test-time training on frozen features (arXiv 2509.24510).",
        epilog="`tttlab COMMAND --help` lists a command's settings.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _top_parser().parse_args(argv)  # prints usage or help, and exits
    shown = warnings.formatwarning
    warnings.formatwarning = lambda message, *_args, **_kw: f"tttlab: warning: {message}\n"
    try:
        return _dispatch(argv[0], argv[1:])
    finally:
        warnings.formatwarning = shown


def _dispatch(command: str, rest: list[str]) -> int:
    """Run one command; every expected failure becomes a one-line message and an exit code."""
    try:
        with terminate_as_interrupt():  # SIGTERM (a scheduler's kill) cleans up like Ctrl-C
            if command == "runs":
                return _runs(rest)
            if command == "study":
                return _study(rest)
            if command == "sae":
                return _sae(rest)
            if command == "embed":
                return _embed(rest)
            if command == "simulate":
                return _simulate(rest)
            if command == "lm":
                return _lm(rest)
            result = run(parse_config(command, rest))
    except (ValueError, FileNotFoundError, ArithmeticError, MemoryError, UnitsFailed) as err:
        print(f"tttlab: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"tttlab: error: {explain_os_error(err)}", file=sys.stderr)
        return 1
    except InterruptedAfterCommit as err:
        print(f"tttlab: interrupted after the run was written: {err.path}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(
            "tttlab: interrupted; no run folder was written (finished stages stay cached, "
            "so running the same command again resumes from them)",
            file=sys.stderr,
        )
        return 130
    if result.reused.get("run"):
        print(f"(already run with these settings: reporting {result.run_dir})")
    print(result.table)
    print(f"results: {result.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
