"""Reading the small files tttlab keeps beside its data (records, settings, manifests) so that any
damage becomes one `FileError` naming the file, the field and the fix, never a traceback.

    record = read_json_object(path, "a study record", fix="restore it, or start anew")
    units = need(record, "units", list, path, fix="...")      # a field of the right type
    for line, row in read_jsonl(path, "a corpus file", fix="rebuild the corpus"): ...

Sizes are bounded before anything is read (a JSON file of gigabytes is refused by its size), and
every value a message repeats is cut (`short`), so a huge value never floods a terminal.
Plain Python: config modules and the command line import it without torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tttlab.checks import short

MAX_JSON_BYTES = 64 * 2**20
"""The largest record tttlab reads whole: its own records are kilobytes."""
MAX_LINE_BYTES = 16 * 2**20
"""The longest line of a JSON-lines file tttlab reads (a document is a few kilobytes)."""


class FileError(ValueError):
    """A file tttlab reads that cannot be used as it is; the message names the file, the field
    where one is at fault, and the fix."""


_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
          type(None): "null", int: "an integer", float: "a number"}  # fmt: skip


def kind(value: Any) -> str:
    """A JSON value's kind, as a message names it."""
    return _KINDS.get(type(value), type(value).__name__)


def read_text(path: str | Path, what: str, fix: str, max_bytes: int = MAX_JSON_BYTES) -> str:
    """A UTF-8 text file of at most `max_bytes`; anything else is a FileError naming it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise FileError(f"{path} is not a file ({what} is expected there): {fix}")
        if size > max_bytes:
            raise FileError(
                f"{path} has {size} bytes, more than the {max_bytes} {what} may have: {fix}"
            )
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise FileError(f"{path} is missing ({what} is expected there): {fix}") from None
    except IsADirectoryError:
        raise FileError(f"{path} is a folder, not {what}: {fix}") from None
    except OSError as err:
        raise FileError(f"{path} cannot be read ({err.strerror or err}): {fix}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FileError(
            f"{path} is not UTF-8 text (byte {err.start}), so not {what}: {fix}"
        ) from None


def parse_json(text: str, path: str | Path, what: str, fix: str) -> Any:
    """`text` (read from `path`) as JSON; a syntax error or absurd nesting is a FileError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FileError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}), so "
            f"not {what}: {fix}"
        ) from None
    except RecursionError:
        raise FileError(f"{path} nests JSON too deeply to be {what}: {fix}") from None


def read_json(path: str | Path, what: str, fix: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON value in `path`; a missing, huge, non-UTF-8 or malformed file is a FileError."""
    return parse_json(read_text(path, what, fix, max_bytes), path, what, fix)


def read_json_object(path: str | Path, what: str, fix: str) -> dict[str, Any]:
    """A JSON file holding an object (a dict)."""
    value = read_json(path, what, fix)
    if not isinstance(value, dict):
        raise FileError(f"{path} holds {kind(value)}, not {what} (a JSON object): {fix}")
    return value


def need(
    record: dict[str, Any],
    key: str,
    types: type | tuple[type, ...],
    path: str | Path,
    fix: str,
    where: str = "",
) -> Any:
    """`record[key]`, which must be of `types` (a bool is no number here); else a FileError
    naming the file, `where` in it (e.g. "line 3") and the field."""
    at = f"{path}, {where}" if where else str(path)
    if key not in record:
        raise FileError(f"{at}: field {key!r} is missing: {fix}")
    value = record[key]
    wanted = types if isinstance(types, tuple) else (types,)
    is_bool = isinstance(value, bool) and bool not in wanted
    if not isinstance(value, wanted) or is_bool:
        names = " or ".join(_KINDS.get(t, t.__name__) for t in wanted)
        raise FileError(
            f"{at}: field {key!r} must be {names}, got {kind(value)} {short(value, 40)}: {fix}"
        )
    return value


def read_jsonl(
    path: str | Path, what: str, fix: str, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each line of a JSON-lines file; a line that is not a JSON object
    (or is too long, or not UTF-8) is a FileError naming the file and the line."""
    path = Path(path)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise FileError(f"{path} is missing ({what} is expected there): {fix}") from None
    except OSError as err:
        raise FileError(f"{path} cannot be read ({err.strerror or err}): {fix}") from None
    with f:
        for number, raw in enumerate(iter(lambda: f.readline(max_line_bytes + 1), b""), 1):
            if len(raw) > max_line_bytes:
                raise FileError(
                    f"{path}: line {number} is longer than {max_line_bytes} bytes, so not {what}: "
                    f"{fix}"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise FileError(f"{path}: line {number} is not UTF-8 text: {fix}") from None
            if not text.strip():
                continue
            row = parse_json(text, f"{path}, line {number}", what, fix)
            if not isinstance(row, dict):
                raise FileError(
                    f"{path}: line {number} holds {kind(row)}, not a JSON object: {fix}"
                )
            yield number, row
