"""The `tttlab` command line: one table of commands, each a config and an entry point.

    tttlab demo                          # Fashion-MNIST, the smallest CNN (d = 25): global vs TTT
    tttlab ttt --width 192 --k 100       # any setting is a flag; `tttlab ttt --help` lists them
    tttlab ttt --config run.json         # or a JSON file of settings (a run's config.json works)
    tttlab study model-size --executor slurm --partition gpu   # a study as a Slurm job array
    tttlab study model-size --preset quick   # a preset's settings (tttlab/presets), flags on top

Every parser is generated from config dataclasses (`tttlab.flags`); an entry point
("module:function") is imported only once its command line has parsed, so `tttlab --help`, a
typo and `tttlab runs` answer without loading torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tttlab.atomic import Interrupted, explain_os_error, terminate_as_interrupt
from tttlab.catalog import STUDY_KINDS, command_hide, command_sections
from tttlab.checks import NonFiniteError
from tttlab.config import Config, ConfigFile, Preset, RunConfig, RunLogConfig
from tttlab.encoders.config import EmbedConfig
from tttlab.flags import FlagError, FlagParser, with_values
from tttlab.lm.config import CorpusConfig, CorpusOutput
from tttlab.presets import PRESETS, command_presets, preset_about, width_settings
from tttlab.sae.config import (
    AnalyseConfig,
    SaeAnalyseInput,
    SaeConfig,
    SaeRunConfig,
    SaeTrainConfig,
    paper_configs,
)
from tttlab.studies.config import SlurmConfig, StudyFolder
from tttlab.studies.units import UnitsFailed, read_jobs
from tttlab.theory.config import BridgeConfig


@dataclass(frozen=True)
class Command:
    """One command: its help line, its sections' defaults, and its entry point."""

    help: str
    sections: Callable[[list[str]], dict[str, Any]]
    """argv -> section name -> default instance or config class (may read --config FILE)."""
    run: str
    """"module:function" called with the parsed sections (and `bound`), returning an exit code."""
    bound: dict[str, Any] = field(default_factory=dict)
    hide: tuple[str, ...] = ()
    positional: tuple[str, ...] = ()

    def parser(self, prog: str, argv: list[str]) -> FlagParser:
        sections, epilog = self.sections(argv), None
        presets = presets_of(prog.removeprefix("tttlab "))
        if presets:
            sections = {"preset": Preset} | apply_preset(prog, presets, sections, argv)
            epilog = "presets (--preset NAME; flags given beside it override it):\n" + "\n".join(
                f"  {name}: {preset_about(name)}" for name in presets
            )
        return FlagParser(
            prog, self.help, sections, hide=self.hide, positional=self.positional, epilog=epilog
        )


def _sae_paper() -> dict[str, Any]:
    """`sae train --preset paper`: the authors' SAE recipe (`tttlab.sae.config.paper_configs`)."""
    sae, train = paper_configs()
    return {"sae": dataclasses.asdict(sae), "train": dataclasses.asdict(train)}


BUILT_PRESETS: dict[str, dict[str, Callable[[], dict[str, Any]]]] = {
    "sae train": {"paper": _sae_paper},
}
"""Presets computed from a preset's data files rather than listed in its commands.json."""


def presets_of(command: str) -> dict[str, Callable[[], dict[str, Any]]]:
    """The presets of a command ("study model-size"), in `PRESETS` order: name -> its section
    values."""
    listed = {name: (lambda v=values: v) for name, values in command_presets(command).items()}
    found = listed | BUILT_PRESETS.get(command, {})
    return {name: found[name] for name in PRESETS if name in found}


def apply_preset(
    prog: str,
    presets: dict[str, Callable[[], dict[str, Any]]],
    sections: dict[str, Any],
    argv: list[str],
) -> dict[str, Any]:
    """The sections with the values of the preset that --preset names laid over their defaults;
    a preset this command does not have is refused, naming those it has."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--preset", default=None)
    chosen = pre.parse_known_args(argv)[0].preset
    if chosen is None:
        return sections
    if chosen not in presets:
        close = difflib.get_close_matches(chosen, list(presets), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        listed = "; ".join(f"{name}: {preset_about(name)}" for name in presets)
        raise FlagError(f"{prog}: --preset {chosen} is no preset of this command{hint}. Its "
                        f"presets: {listed}")  # fmt: skip
    out = dict(sections)
    for name, values in presets[chosen]().items():
        out[name] = with_values(out[name], values)
    return out


def _config_file(argv: list[str]) -> str | None:
    """The value of --config FILE, if given."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    return pre.parse_known_args(argv)[0].config


def _run_config(argv: list[str], default: Config | None = None) -> Config | type[Config]:
    """The run config a --config FILE gives, else `default`, else the class (its field
    defaults, so an unset --model still follows --features)."""
    path = _config_file(argv)
    return Config.from_file(path) if path else default or Config


def demo_config() -> Config:
    """The demo: the d = 25 CNN trained as the paper trains it (its tuned lr, batch and epochs),
    so TTT's headline gain is measured against a global model trained to the paper's standard."""
    train = width_settings()[25].train_config()
    return Config(train=train, run=RunConfig(name="demo"))


def _ttt_sections(default: Config | None = None) -> Callable[[list[str]], dict[str, Any]]:
    return lambda argv: {"cfg": _run_config(argv, default), "file": ConfigFile}


def _study_sections(kind: str) -> Callable[[list[str]], dict[str, Any]]:
    spec = STUDY_KINDS[kind]

    def sections(argv: list[str]) -> dict[str, Any]:
        out = command_sections(kind)
        if spec.run_config is not None:
            out[spec.run_config] = _run_config(argv)
        return out

    return sections


def _resume_sections(argv: list[str]) -> dict[str, Any]:
    """The folder, and where units run: by default as the study's last Slurm submission ran
    them."""
    folder = next((a for a in argv if not a.startswith("-")), None)
    executor: Any = SlurmConfig
    submissions = read_jobs(folder) if folder and Path(folder).is_dir() else []
    if submissions:
        executor = SlurmConfig(**submissions[-1]["slurm"])
    return {"where": StudyFolder, "executor": executor}


def _simulate_sections(argv: list[str]) -> dict[str, Any]:
    return _study_sections("simulate")(argv) | {"bridge": BridgeConfig}


def _sections(**values: Any) -> Callable[[list[str]], dict[str, Any]]:
    return lambda argv: dict(values)


FOLDER = ("where.folder",)
STUDY_COMMANDS: dict[str, Command] = {
    kind: Command(
        spec.help,
        _study_sections(kind),
        "tttlab.commands:study",
        {"kind": kind},
        hide=command_hide(kind),
    )
    for kind, spec in STUDY_KINDS.items()
} | {
    "status": Command(
        "a study folder's units: done, queued or running on Slurm, failed (and why), missing",
        _sections(where=StudyFolder), "tttlab.commands:study_status", positional=FOLDER,
    ),
    "report": Command(
        "rebuild a study folder's table, plot and report (refuses while units are missing)",
        _sections(where=StudyFolder), "tttlab.commands:study_report", positional=FOLDER,
    ),
    "resume": Command(
        "run (or submit to Slurm) only a study folder's failed and missing units; report",
        _resume_sections, "tttlab.commands:study_resume", positional=FOLDER,
    ),
}  # fmt: skip

COMMANDS: dict[str, Command | dict[str, Command]] = {
    "demo": Command(
        "Fashion-MNIST, the smallest CNN (d = 25): global head, TTT, majority vote",
        lambda argv: _ttt_sections(demo_config())(argv),
        "tttlab.commands:ttt",
    ),
    "ttt": Command(
        "one run: global head, TTT and baselines on a test set; every setting is a flag",
        _ttt_sections(),
        "tttlab.commands:ttt",
    ),
    "runs": Command("print the run log", _sections(log=RunLogConfig), "tttlab.commands:runs"),
    "study": STUDY_COMMANDS,
    "simulate": Command(
        STUDY_KINDS["simulate"].help, _simulate_sections, "tttlab.commands:simulate",
        {"kind": "simulate"},
    ),
    "sae": {
        "train": Command(
            "train a top-k sparse autoencoder on a feature file; writes a run folder",
            _sections(input=SaeRunConfig, sae=SaeConfig, train=SaeTrainConfig),
            "tttlab.sae.cli:train",
        ),
        "analyse": Command(
            "the paper's three concept analyses of an SAE on a feature file",
            _sections(input=SaeRunConfig, sae=SaeAnalyseInput, analyse=AnalyseConfig),
            "tttlab.sae.cli:analyse",
        ),
    },
    "embed": Command(
        "images (MNIST-format set or class folders) -> a cached feature file, by an encoder",
        _sections(embed=EmbedConfig), "tttlab.encoders.cli:main",
    ),
    "lm": {
        "corpus": Command(
            "Debian documentation packages -> a Pile-like corpus of ~1 KB documents, test held "
            "out by source file",
            _sections(corpus=CorpusConfig, output=CorpusOutput), "tttlab.lm.cli:corpus",
        ),
    },
}  # fmt: skip
"""Every command; a dict is a group of subcommands (`tttlab study model-size`)."""


def _usage(prog: str, table: dict[str, Any]) -> str:
    width = max(len(name) for name in table) + 2
    lines = []
    for name, entry in table.items():
        text = entry.help if isinstance(entry, Command) else ", ".join(entry)
        lines.append(f"  {name:<{width}}{text}")
    return (
        f"usage: {prog} COMMAND [flags]\n\ncommands:\n"
        + "\n".join(lines)
        + (f"\n\n`{prog} COMMAND --help` lists a command's flags.")
    )


def find(argv: list[str]) -> tuple[str, Command | None, list[str], dict[str, Any]]:
    """(prog, the command named by argv's first words or None, the rest, the table searched)."""
    prog, table, rest = "tttlab", COMMANDS, list(argv)
    while rest and isinstance(table.get(rest[0]), dict):
        prog, table, rest = f"{prog} {rest[0]}", table[rest[0]], rest[1:]
    if rest and isinstance(table.get(rest[0]), Command):
        return f"{prog} {rest[0]}", table[rest[0]], rest[1:], table
    return prog, None, rest, table


def parse(argv: list[str]) -> dict[str, Any]:
    """The parsed sections a command line gives its entry point (nothing runs): for tests, and
    for checking a recipe's command line."""
    prog, command, rest, table = find(argv)
    if command is None:
        raise FlagError(_unknown_command(prog, rest[0] if rest else "", table))
    return command.parser(prog, rest).parse(rest)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog, command, rest, table = find(argv)
    if command is None:
        if rest and rest[0] not in ("-h", "--help"):
            print(f"tttlab: error: {_unknown_command(prog, rest[0], table)}", file=sys.stderr)
            return 2
        print(_usage(prog, table))
        return 0
    shown = warnings.formatwarning
    warnings.formatwarning = lambda message, *_args, **_kw: f"tttlab: warning: {message}\n"
    try:
        return _dispatch(prog, command, rest)
    finally:
        warnings.formatwarning = shown


def _unknown_command(prog: str, word: str, table: dict[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(table), n=1)
    hint = f": did you mean `{prog} {close[0]}`?" if close else ""
    return f"`{prog} {word}` is no command{hint} (`{prog} --help` lists them)"


def _dispatch(prog: str, command: Command, rest: list[str]) -> int:
    """Parse, then run one command; every expected failure becomes one line and an exit code."""
    try:
        parser = command.parser(prog, [a for a in rest if a not in ("-h", "--help")])
        if "-h" in rest or "--help" in rest:
            print(parser.format_help())
            return 0
        parsed = parser.parse(rest)
        module, _, name = command.run.partition(":")
        with terminate_as_interrupt():  # SIGTERM (a scheduler's kill) cleans up like Ctrl-C
            entry = getattr(importlib.import_module(module), name)
            return entry(parsed, **command.bound)
    except FlagError as err:
        print(f"tttlab: error: {_elsewhere(err, prog)}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, NonFiniteError, MemoryError, UnitsFailed) as err:
        print(f"tttlab: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"tttlab: error: {explain_os_error(err)}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(f"tttlab: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("tttlab: interrupted", file=sys.stderr)
        return 130


def _elsewhere(err: FlagError, prog: str) -> str:
    """The message, with the other commands that do take a flag this one does not."""
    text = str(err)
    if "unrecognized arguments" not in text:
        return text
    flags = {t.split("=")[0] for t in text.split(":", 1)[1].split("(")[0].split() if t[:2] == "--"}
    where: dict[str, list[str]] = {}
    for other, command in _all_commands():
        if other == prog:
            continue
        try:
            known = {f.name for f in command.parser(other, []).flags.values()}
        except Exception:  # a command whose defaults cannot be built here: skip it
            continue
        for flag in flags & known:
            where.setdefault(flag, []).append(other)
    notes = []
    for flag, commands in sorted(where.items()):
        studies = [c for c in commands if c.startswith("tttlab study ")]
        named = [c for c in commands if c not in studies] + (
            ["tttlab study <kind>"] if len(studies) > 1 else studies
        )
        notes.append(f"{flag} is a flag of {', '.join(f'`{c}`' for c in named)}, not of `{prog}`")
    return text + ("; " + "; ".join(notes) if notes else "")


def _all_commands() -> list[tuple[str, Command]]:
    out = []

    def walk(prefix: str, table: dict[str, Any]) -> None:
        for name, entry in table.items():
            if isinstance(entry, Command):
                out.append((f"{prefix} {name}", entry))
            else:
                walk(f"{prefix} {name}", entry)

    walk("tttlab", COMMANDS)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
