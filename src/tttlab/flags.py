"""Command-line flags generated from config dataclasses: the one place tttlab writes argparse code.

    parser = FlagParser("tttlab ttt", "one run ...", {"cfg": Config()})
    parsed = parser.parse(["--k", "10", "--no-progress"])     # {"cfg": Config(...)}, validated

Each leaf field of a section becomes `--field-name` (dash-case); where two sections of one command
share a field name, `--section.field-name`. Booleans are `--x/--no-x`, `Literal` fields take one
of their values, `tuple[T, ...]` fields several, and a field's docstring is its help, grouped
under its dataclass's name. Values are checked by building the dataclasses (`tttlab.tree`), so
a flag's error is the same as a config file's. Plain Python: no torch import while parsing.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tttlab.tree import field_docs, from_values

BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0")


class FlagError(ValueError):
    """A command line tttlab cannot parse; the message names the flag and the fix."""


@dataclass(frozen=True)
class Flag:
    """One generated flag: where its value goes in which section, and how it reads."""

    name: str
    """The option string, e.g. "--k" or "--ttt.epochs"."""
    section: str
    path: tuple[str, ...]
    """Field names from the section's root to the leaf."""
    hint: Any
    """The field's annotation."""
    boolean: bool


def heading(cls: type) -> str:
    """A plain group title from a config class's name: DataConfig -> "Data", LMTTTConfig ->
    "LM TTT", StudyOptions -> "Study options"."""
    name = cls.__name__.removesuffix("Config") or cls.__name__
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z]|\d|\b)|[A-Z]?[a-z]+|\d+|[A-Z]+", name)
    text = " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in words)
    return text[:1].upper() + text[1:]


def _first_sentence(cls: type) -> str | None:
    doc = " ".join((cls.__doc__ or "").split())
    if not doc or doc.startswith(f"{cls.__name__}("):  # dataclass's generated signature
        return None
    return doc


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the annotation without `| None`, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _leaves(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], type, Any]]:
    """(path, owning class, annotation) of every non-dataclass field, depth first."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out += _leaves(hint, (*prefix, f.name))
        else:
            out.append(((*prefix, f.name), cls, hint))
    return out


@dataclass(frozen=True)
class Defaults:
    """A section given as its config class and some of its values (a preset's): its flags'
    defaults, checked once the command line is parsed (the user's flags may complete them)."""

    cls: type
    values: dict[str, Any]
    """Nested plain values, as a config file holds them; fields not named keep their defaults."""


def with_values(section: Any, values: dict[str, Any]) -> Defaults:
    """`section` (an instance, a class or `Defaults`) with `values` laid over its defaults."""
    return Defaults(section_type(section), merge(defaults_of(section), values))


def merge(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """`values` laid over `base`, section by section (a copy; neither is changed)."""
    out = copy.deepcopy(base)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def section_type(section: Any) -> type:
    """The config class of a section given as a class, an instance or `Defaults`."""
    if isinstance(section, Defaults):
        return section.cls
    return section if isinstance(section, type) else type(section)


def defaults_of(section: Any) -> dict[str, Any]:
    """A section's default values as plain nested values: an instance's own, `Defaults`' values
    over its class's, or a class's field defaults (a class whose defaults alone do not validate,
    such as a required path, is fine)."""
    if isinstance(section, Defaults):
        return merge(defaults_of(section.cls), section.values)
    if not isinstance(section, type):
        return dataclasses.asdict(section)
    values = {}
    for f in dataclasses.fields(section):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        values[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return values


def _get(values: dict[str, Any], path: Sequence[str]) -> Any:
    for name in path:
        values = values.get(name) if isinstance(values, dict) else None
    return values


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return " ".join(_show(v) for v in value) if value else "(none)"
    return str(value)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        pattern = r"argument (--[\w.-]+)/--no-[\w.-]+: ignored explicit argument"
        explicit = re.match(pattern, message)
        if explicit:
            on = explicit.group(1)[2:]
            message = f"--{on} takes no value: write --{on} to turn it on, --no-{on} to turn it off"
        raise FlagError(f"{self.prog}: {message}")


class FlagParser:
    """The parser of one command: its sections' fields as flags, grouped by dataclass."""

    def __init__(
        self,
        prog: str,
        description: str,
        sections: dict[str, Any],
        *,
        hide: Sequence[str] = (),
        positional: Sequence[str] = (),
        epilog: str | None = None,
    ):
        """sections: name -> a default instance (its values are the flags' defaults), a config
        class (its field defaults) or `Defaults` (a class and some values); hide: dotted paths
        ("base.run.out") of fields the command does not read; positional: dotted paths of fields
        given by position, not as flags."""
        self.prog = prog
        self.types = {name: section_type(section) for name, section in sections.items()}
        self.defaults = {name: defaults_of(section) for name, section in sections.items()}
        self.parser = _Parser(
            prog=prog, description=description, epilog=epilog, allow_abbrev=False,
            argument_default=argparse.SUPPRESS,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        leaves = [
            (name, path, owner, hint)
            for name, cls in self.types.items()
            for path, owner, hint in _leaves(cls)
            if ".".join((name, *path)) not in hide
        ]
        counts: dict[str, int] = {}
        for _, path, _, _ in leaves:
            counts[path[-1]] = counts.get(path[-1], 0) + 1
        self.flags: dict[str, Flag] = {}
        groups: dict[tuple[str, tuple[str, ...]], Any] = {}
        for name, path, owner, hint in leaves:
            key = (name, path[:-1])
            if key not in groups:
                groups[key] = self.parser.add_argument_group(heading(owner), _first_sentence(owner))
            dotted = ".".join((name, *path))
            self._add(groups[key], name, path, owner, hint, dotted in positional, counts)

    def _add(self, group, section, path, owner, hint, positional, counts) -> None:
        field = path[-1]
        dashed = field.replace("_", "-")
        if counts[field] > 1:
            parent = path[-2] if len(path) > 1 else section
            dashed = f"{parent}.{dashed}"
        inner, optional = _unwrap(hint)
        default = _get(self.defaults[section], path)
        doc = field_docs(owner).get(field, "")
        boolean = inner is bool
        dest = "\0".join((section, *path))
        kwargs: dict[str, Any] = {"dest": dest}
        origin, args = typing.get_origin(inner), typing.get_args(inner)
        if boolean:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            kwargs |= {"choices": args, "metavar": "{" + ",".join(map(str, args)) + "}"}
            kwargs["type"] = type(args[0])
        elif origin is tuple:
            item = args[0] if args else str
            kwargs |= {"type": _reader(item), "metavar": _metavar(item, field)}
            kwargs["nargs"] = "*" if args[-1:] == (Ellipsis,) else len(args)
        else:
            kwargs |= {"type": _reader(inner), "metavar": _metavar(inner, field)}
        shown = "" if positional else f" (default: {_show(default)})"
        kwargs["help"] = (doc + shown).replace("%", "%%")
        if positional:
            del kwargs["dest"]
            group.add_argument(dest, **kwargs)
            name = dest
        else:
            name = f"--{dashed}"
            short = [f"-{field}"] if len(field) == 1 else []
            group.add_argument(name, *short, **kwargs)
        self.flags[dest] = Flag(name, section, path, inner, boolean)

    def format_help(self) -> str:
        return self.parser.format_help()

    def parse(self, argv: Sequence[str]) -> dict[str, Any]:
        """Each section built from its defaults and the flags given, validated; an unknown or
        misspelt flag is refused naming the flags it probably meant."""
        argv = list(argv)
        args, unknown = self.parser.parse_known_args(argv)
        if unknown:
            raise FlagError(self.unknown_message(unknown, argv))
        given: dict[str, dict[tuple[str, ...], Any]] = {name: {} for name in self.types}
        for dest, value in vars(args).items():
            flag = self.flags[dest]
            given[flag.section][flag.path] = list(value) if isinstance(value, tuple) else value
        out = {}
        for name, cls in self.types.items():
            values = copy.deepcopy(self.defaults[name])
            for path, value in given[name].items():
                node = values
                for key in path[:-1]:
                    node = node.setdefault(key, {})
                node[path[-1]] = value
            try:
                out[name] = from_values(cls, values)
            except ValueError as err:
                raise FlagError(self._flag_message(str(err), name)) from None
        return out

    def _flag_message(self, message: str, section: str) -> str:
        """A tree's message in flags: dotted keys replaced by the flags that set them, and a
        section's check led by the flag of the field it names."""
        mine = [f for f in self.flags.values() if f.section == section]
        for flag in mine:
            message = message.replace(f"'{'.'.join(flag.path)}'", flag.name)
        prefix = re.match(r"config section '([\w.]+)': ", message)
        if prefix:
            message = message[prefix.end() :]
            parent = tuple(prefix.group(1).split("."))
            for flag in mine:
                if flag.path[:-1] == parent and re.match(rf"{flag.path[-1]}\b", message):
                    return f"{flag.name}: {message}"
        return message

    def unknown_message(self, unknown: list[str], argv: list[str]) -> str:
        """Name the unknown arguments, each with what it probably meant."""
        options = [o for a in self.parser._actions for o in a.option_strings]
        booleans = {f.name for f in self.flags.values() if f.boolean}
        hints = []
        for token in unknown:
            flag = token.split("=", 1)[0]
            word = token.lower()
            at = argv.index(token) if token in argv else -1
            before = argv[at - 1] if at > 0 else ""
            if word in BOOL_WORDS and before in booleans | {f"--no-{b[2:]}" for b in booleans}:
                on = before.removeprefix("--no-").removeprefix("--")
                hints.append(
                    f"{before} takes no value: write --{on} to turn it on, --no-{on} to turn it off"
                )
            elif "=" in token and flag in booleans:
                on = flag[2:]
                hints.append(f"{token}: write --{on} or --no-{on}, without a value")
            elif flag.startswith("--no") and not flag.startswith("--no-"):
                right = f"--no-{flag[4:]}"
                if right in options:
                    hints.append(f"{flag}: booleans are switched off with {right}")
                    continue
                hints.append(self._closest(flag, options))
            elif flag.startswith("-"):
                hints.append(self._closest(flag, options))
            elif before not in unknown:
                hints.append(f"{token!r} is not a flag's value here")
        text = "; ".join(h for h in hints if h)
        return (
            f"unrecognized arguments: {' '.join(unknown)}"
            + (f" ({text})" if text else "")
            + f". `{self.prog} --help` lists its flags"
        )

    def _closest(self, flag: str, options: list[str]) -> str:
        same = [o for o in options if o.endswith("." + flag.lstrip("-"))]
        close = same or difflib.get_close_matches(flag, options, n=2, cutoff=0.7)
        return f"{flag}: did you mean {' or '.join(close)}?" if close else ""


def _reader(kind: Any):
    """The argparse `type` for a leaf: int, float or str; numbers written 1e6 read as ints where
    an int is asked for."""
    if kind is int:
        return _int
    if kind is float:
        return float
    if _int_or_word(kind):
        return _int_or_text
    return str


def _int_or_word(kind: Any) -> bool:
    """Whether `kind` is a number or a word, as `int | Literal["all"]`."""
    args = (
        typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else ()
    )
    return int in args and any(typing.get_origin(a) is Literal for a in args)


def _int_or_text(text: str) -> int | str:
    """A number where the text is one, else the text (the config tree checks the word)."""
    try:
        return _int(text)
    except ValueError:
        return text


def _int(text: str) -> int:  # argparse names it "int" in its messages
    try:
        return int(text)
    except ValueError:
        value = float(text)  # "1e6": an int written as a float, if it is whole
        if value.is_integer():
            return int(value)
        raise


def _metavar(kind: Any, field: str) -> str:
    if _int_or_word(kind):
        words = [w for a in typing.get_args(kind) if typing.get_origin(a) is Literal
                 for w in typing.get_args(a)]  # fmt: skip
        return "{" + ",".join(["N", *map(str, words)]) + "}"
    return {int: "N", float: "X"}.get(kind, field.upper())


_int.__name__ = "int"
