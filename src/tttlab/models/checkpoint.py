"""Save and load model weights: safetensors with JSON metadata, or the paper's torch.save files.

`save_model` writes to a temporary file and renames it, so an interrupted save never leaves a
truncated checkpoint behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from tttlab.atomic import atomic_path

TORCH_SUFFIXES = (".pt", ".pth")


def save_model(model: nn.Module, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write the model's weights and `meta` (JSON values, e.g. kind, size_scale) as safetensors."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path} must end in .safetensors: save_model writes safetensors files")
    metadata = {}
    for key, value in meta.items():
        try:
            metadata[str(key)] = json.dumps(value)
        except TypeError as err:
            raise ValueError(
                f"meta[{key!r}] = {value!r} is not JSON-serialisable: store numbers, strings, "
                "lists or dicts of them"
            ) from err
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def _decode(value: str) -> Any:
    """A metadata value as save_model wrote it (JSON); other tools' plain strings stay strings."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def load_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read (state_dict, meta) on CPU from a .safetensors file or a .pt/.pth state dict.

    A .pt/.pth file has no metadata, so its meta is {}.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: check the path or train the model first")
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            meta = {k: _decode(v) for k, v in (f.metadata() or {}).items()}
        return state, meta
    if path.suffix in TORCH_SUFFIXES:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise ValueError(
                f"{path} does not hold a state dict (a dict of tensors) but a "
                f"{type(state).__name__}: save it with torch.save(model.state_dict(), path)"
            )
        return dict(state), {}
    raise ValueError(
        f"{path} has an unknown suffix {path.suffix!r}: use .safetensors or one of {TORCH_SUFFIXES}"
    )
