"""Lazy package exports: a package's public names import their module on first use.

So `from tttlab.ttt.config import TTTConfig` runs no torch import through `tttlab/ttt/__init__.py`,
and the command line builds its parsers (and answers `--help`) without loading torch.

    __getattr__, __dir__, __all__ = exports(__name__, {"tttlab.ttt.engine": ["finetune"]})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def exports(
    package: str, modules: dict[str, list[str]]
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """The package's `__getattr__`, `__dir__` and `__all__` for names defined in `modules`."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> object:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__, sorted(where)
