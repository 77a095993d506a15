"""Save and load model weights: safetensors with JSON metadata, or the paper's torch.save files.

`save_model` writes to a temporary file and renames it, so an interrupted save never leaves a
truncated checkpoint behind. `load_state` reads weights only (never arbitrary pickles) and refuses
truncated files and NaN/inf weights with a message that names the file and the fix.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
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

    A .pt/.pth file has no metadata, so its meta is {}. Every weight must be finite.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: check the path or train the model first")
    if path.suffix == ".safetensors":
        state, meta = _load_safetensors(path)
    elif path.suffix in TORCH_SUFFIXES:
        state, meta = _load_torch(path), {}
    else:
        raise ValueError(
            f"{path} has an unknown suffix {path.suffix!r}: use .safetensors or one of "
            f"{TORCH_SUFFIXES}"
        )
    _check_finite(state, path)
    return state, meta


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            meta = {k: _decode(v) for k, v in (f.metadata() or {}).items()}
    except SafetensorError as err:
        raise ValueError(
            f"{path} is truncated or corrupt (safetensors says: {err}): re-save it with "
            "save_model, or re-train the model"
        ) from err
    return state, meta


def _load_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise _corrupt(path, err) from err
        # torch's own message suggests weights_only=False, which runs arbitrary code on load.
        raise ValueError(
            f"{path} holds pickled Python objects, not just weights; tttlab loads weights only, "
            "never arbitrary pickles. Re-save it in the environment that made it with "
            "torch.save(model.state_dict(), path), or as safetensors with "
            "tttlab.models.save_model"
        ) from None
    except PermissionError:
        raise
    except Exception as err:  # torch reports damage as EOFError, RuntimeError, OSError, KeyError
        raise _corrupt(path, err) from err
    if not isinstance(state, dict):
        raise ValueError(
            f"{path} does not hold a state dict (a dict of tensors) but a "
            f"{type(state).__name__}: save it with torch.save(model.state_dict(), path)"
        )
    others = {k: type(v).__name__ for k, v in state.items() if not isinstance(v, torch.Tensor)}
    if others:
        listed = ", ".join(f"{k!r} ({t})" for k, t in list(others.items())[:5])
        raise ValueError(
            f"{path} does not hold a state dict (a dict of tensors): entries {listed} are not "
            "tensors. If the weights sit under one key (e.g. 'model'), re-save that entry with "
            "torch.save(model.state_dict(), path)"
        )
    return dict(state)


def _corrupt(path: Path, err: Exception) -> ValueError:
    detail = str(err) or type(err).__name__
    return ValueError(
        f"{path} is truncated or corrupt (torch.load says: {detail.splitlines()[0]}): re-save it "
        "with torch.save(model.state_dict(), path), or re-train the model"
    )


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse NaN/inf weights here, where the file is known, not later in a confusing place."""
    bad = {}
    for key, value in state.items():
        if value.is_floating_point() or value.is_complex():
            n = int((~torch.isfinite(value)).sum())
            if n:
                bad[key] = f"{key!r} ({n} of {value.numel()})"
    if bad:
        listed = ", ".join(list(bad.values())[:5]) + (" ..." if len(bad) > 5 else "")
        raise ValueError(
            f"{path} has NaN or inf weights in {len(bad)} tensor(s): {listed}; the training that "
            "wrote it diverged: re-train (e.g. with a lower learning rate) or use an earlier "
            "checkpoint"
        )
