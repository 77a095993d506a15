"""Input conversion shared by every public entry point: convert once, reject bad input with the fix.

Each check names the argument, the shape or value it got and what is allowed.
"""

from __future__ import annotations

import numpy as np
import torch

from tttlab.checks import DEVICES, check_choice


def as_matrix(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """Convert once to a C-contiguous float32 matrix and reject empty or non-finite input; a
    contiguous float32 array (a read-only memory map too) is returned as is, not copied."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix (points x features), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: pass at least one point")
    bad = _nonfinite_rows(x)
    if len(bad):
        raise ValueError(
            f"{name} has {len(bad)} rows with NaN or inf (first: {bad[:5].tolist()}): "
            "clean or drop them first"
        )
    return x


def _nonfinite_rows(x_ND: np.ndarray, chunk_bytes: int = 2**25) -> np.ndarray:
    """Indices of rows holding NaN or inf, checked in chunks so a memory-mapped pool is read
    once and never gets a pool-sized boolean temporary."""
    step = max(1, chunk_bytes // max(1, x_ND.shape[1]))
    bad = [
        s + np.flatnonzero(~np.isfinite(x_ND[s : s + step]).all(axis=1))
        for s in range(0, len(x_ND), step)
    ]
    return np.concatenate(bad)


def as_batch(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """Convert once to a float32 tensor of rows (N, ...) and reject empty or non-finite input."""
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(
            f"{name} must hold at least one example as rows (N, ...), got shape {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)).sum())
        raise ValueError(f"{name} has {bad} examples with NaN or inf: clean or drop them first")
    return x


def as_class_indices(
    y: torch.Tensor | np.ndarray, n: int, num_classes: int, name: str
) -> torch.Tensor:
    """Convert to int64 class indices in [0, num_classes), one per row of n inputs."""
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(
            f"{name} must hold integer class indices, got dtype {y.dtype}: float labels would be "
            "truncated; cast integral ones with .astype(int)"
        )
    y = y.long()
    if y.shape != (n,):
        raise ValueError(
            f"{name} has shape {tuple(y.shape)} but its inputs have {n} rows: pass one label per "
            "example as a 1-D array"
        )
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"{name} has labels in [{lo}, {hi}] but the model has {num_classes} classes: labels "
            f"must lie in [0, {num_classes}); remap the labels or build the model with "
            f"num_classes={max(hi + 1, num_classes)}"
        )
    return y


def check_device(device: object, name: str = "device") -> None:
    """ "cpu", or "cuda" (or "cuda:N") where this torch sees a CUDA device: refused before any
    work, naming the setting (a flag such as "--device" or an argument such as "device")."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = device
    check_choice(kind, name, DEVICES)
    if kind == "cuda" and not torch.cuda.is_available():
        fix = f"{name} cpu" if name.startswith("--") else f"{name}='cpu'"
        raise ValueError(
            f"{name}={device!r} but this torch ({torch.__version__}) sees no CUDA device: use "
            f"{fix}, or install a CUDA build of torch on a GPU machine"
        )
