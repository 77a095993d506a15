"""Config trees: dataclasses of settings, built from plain values (a JSON file, parsed flags) with
every value checked against its annotation and the key path named in every message.

    cfg = from_values(Config, {"data": {"limit": 500}, "ttt": {"k": 10}})
    docs = field_docs(TTTConfig)          # {"k": "Neighbours fine-tuned on per test point: ..."}

Plain Python: command-line parsers are generated from these trees without importing torch.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import textwrap
import types
import typing
from typing import Any, Literal

from tttlab.checks import short as _short

MAX_DEPTH = 8
"""Nesting a tree may have; a deeper JSON value is refused before it is walked."""


def from_values(cls: type, values: Any, path: str = "") -> Any:
    """`cls` built from nested dicts of plain values (JSON lists become tuples); an unknown key,
    a wrong type or a bad value is refused naming its dotted key."""
    where = f"config key {path!r}" if path else "the config"
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a JSON object of settings, got {_short(values)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in known:
            raise ValueError(unknown_key(cls, str(key), dotted, known))
        kwargs[key] = _convert(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except ValueError as err:
        if path and not str(err).startswith("config key"):
            raise ValueError(f"config section {path!r}: {err}") from err
        raise


def unknown_key(cls: type, key: str, dotted: str, known: set[str]) -> str:
    """The message for a key `cls` does not have: the closest known key, or the section that has
    it where the tree nests sections (a flat key of an older format)."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    for section, hint_type in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint_type) and key in {
            f.name for f in dataclasses.fields(hint_type)
        }:
            hint = f"; settings are nested by section: put it under {section!r}"
            break
    return f"unknown config key {_short(dotted)}{hint}. Known keys here: {', '.join(sorted(known))}"


def _convert(value: Any, hint: Any, path: str) -> Any:
    """`value` checked against the annotation `hint` (JSON lists become tuples)."""
    if path.count(".") > MAX_DEPTH:
        raise ValueError(f"config key {_short(path)} is nested too deeply: check the file")
    if dataclasses.is_dataclass(hint):
        return from_values(hint, value, path)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(value, inner[0], path)
        for hint_i in inner:  # e.g. int | Literal["all"]: the first that takes the value
            try:
                return _convert(value, hint_i, path)
            except ValueError:
                continue
        kinds = [
            f"one of {list(typing.get_args(h))}" if typing.get_origin(h) is Literal else h.__name__
            for h in inner
        ]
        raise ValueError(f"config key {path!r} must be {' or '.join(kinds)}, got {_short(value)}")
    if origin is Literal:
        if value not in args:
            raise ValueError(
                f"config key {path!r} must be one of {list(args)}, got {_short(value)}"
            )
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {path!r} must be a list, got {_short(value)}")
        items = args[:1] * len(value) if args[-1:] == (Ellipsis,) else args
        if len(items) != len(value):
            raise ValueError(
                f"config key {path!r} must be a list of {len(items)}, got {_short(value)}"
            )
        return tuple(
            _convert(v, t, f"{path}[{i}]")
            for i, (v, t) in enumerate(zip(value, items, strict=True))
        )
    expected = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}.get(hint)
    if expected is not None:
        if isinstance(value, bool) and hint is not bool or not isinstance(value, expected):
            raise ValueError(
                f"config key {path!r} must be {hint.__name__}, got {_short(value)} "
                f"({type(value).__name__})"
            )
        return float(value) if hint is float else value
    raise TypeError(f"config key {path!r} has an annotation tttlab cannot read: {hint!r}")


def to_values(tree: Any) -> dict[str, Any]:
    """The tree as nested plain values (tuples stay tuples), as `from_values` reads them."""
    return dataclasses.asdict(tree)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body), whitespace
    folded; fields without one are absent."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0].body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs
