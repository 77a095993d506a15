"""The tail engine: fine-tune one copy of a model's last layers per test point, many at once.

A model is cut into a frozen trunk and a tail (`split_tail`: its last N layers, or the layers from
the first one holding a named parameter on). The trunk runs once over the pool and the queries;
each test point b then gets its own copy of the tail's tuned parameters, stacked along a leading
axis, trained on its first cfg.k neighbours' trunk outputs. Gradients come from `torch.func`
(`vmap` of `grad` of one point's loss through `functional_call`), so any tail torch can vectorise
works; the loss per point is its mean cross-entropy (plus the l2 pull toward the global weights),
exactly the loop of `tttlab.ttt.reference`, and one fused Adam step over the stacked parameters is
B independent Adam steps (Adam is element-wise). Results equal the one-point-at-a-time loop to
float32 rounding: the batched kernels sum in another order.

Where the tail is one `nn.Linear`, `tail_logits` hands it to the closed-form engine
(`tttlab.ttt.engine`), which is faster and gives the same predictions.

Determinism. On CPU a point's logits do not depend on the chunk it ran in, nor on its place
there (tested with torch.equal for the CNN family's tails). Three paddings make it so: chunks get
copies of their last point up to at least 2 points and a multiple of the CPU's threads (as the
linear engine's do); an odd batch of neighbours (a sequential step's one, an odd k) gets a copy of
its first neighbour of weight 0, and a query is predicted as a batch of two copies, because CPU
kernels take other paths for a batch of one or a small odd batch, where a grouped convolution's
or a batched matmul's bits depend on the point's place; and each point's parameters sit in one
buffer padded to whole blocks of ALIGN floats, so fused Adam's vector path covers every one of
them. Not promised: the same bits for other layers' kernels, thread counts or devices.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.optim.adam import adam
from tqdm.auto import tqdm

from tttlab.checks import NonFiniteError
from tttlab.models.train import apply_model
from tttlab.tensors import as_class_indices
from tttlab.ttt.config import Layers, TTTConfig, check_layers
from tttlab.ttt.engine import (
    _check_finite_rows,
    _check_neighbours,
    _diverged,
    _padded_chunk,
    ttt_logits,
)

TAIL_CHUNK_BYTES = {"cpu": 64 * 2**20, "cuda": 1024 * 2**20}
"""Working memory of one chunk of points, by device: sets the automatic chunk size."""


# ---- cutting a model into trunk and tail ------------------------------------------------------


def layer_sequence(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's layers in the order its forward runs them, with their names in the model.

    An nn.Sequential is read in order (nested ones flattened); a model with `as_sequential()`
    (tttlab's CNN and heads) gives its own order; a bare nn.Linear is one layer. Any other model
    cannot be cut into layers: tune named parameters instead (`split_tail(params=...)`).
    """
    if isinstance(model, nn.Linear):
        return [("", model)]
    if callable(getattr(model, "as_sequential", None)):
        seq = model.as_sequential()
    elif isinstance(model, nn.Sequential):
        seq = model
    else:
        raise TypeError(
            f"{type(model).__name__} is not an nn.Sequential and has no as_sequential(), so its "
            "layers' order is unknown: pass an nn.Sequential (or a model with as_sequential() "
            "returning its layers in order), or name the parameters to tune (params=[...])"
        )
    names = {id(m): name for name, m in model.named_modules()}
    return [(names.get(id(m), str(i)), m) for i, m in enumerate(_flatten(seq))]


def _flatten(seq: nn.Sequential) -> list[nn.Module]:
    out = []
    for m in seq:
        out.extend(_flatten(m) if isinstance(m, nn.Sequential) else [m])
    return out


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def count_layers(model: nn.Module) -> int:
    """Layers holding parameters: what `layers` counts (the CNN has 3, an MLP head 2)."""
    return sum(_has_parameters(m) for _, m in layer_sequence(model))


@dataclass(frozen=True)
class Tail:
    """A model cut in two: a frozen trunk run once, and a tail whose `tuned` parameters are
    fine-tuned per test point (the tail's own parameter names)."""

    trunk: nn.Module
    tail: nn.Module
    tuned: tuple[str, ...]
    layers: tuple[str, ...]
    """The model's names of the tail's layers, in order (for messages and records)."""
    depth: int
    """Layers with parameters in the tail."""

    def inputs(
        self, x: torch.Tensor | np.ndarray, batch_size: int = 4096, device: str = "cpu"
    ) -> torch.Tensor:
        """What the tail sees: the trunk's outputs for x, in batches (float32, CPU)."""
        if isinstance(self.trunk, nn.Identity):
            return torch.as_tensor(np.asarray(x, dtype=np.float32) if _is_numpy(x) else x).float()
        return apply_model(self.trunk, x, batch_size, device)

    @property
    def linear(self) -> nn.Linear | None:
        """The tail's one nn.Linear where that is all it is (all of it tuned), else None."""
        mods = [m for m in self.tail.modules() if not isinstance(m, nn.Sequential)]
        if len(mods) == 1 and type(mods[0]) is nn.Linear and len(self.tuned) == 2:
            return mods[0]
        return None


def split_tail(
    model: nn.Module, layers: Layers | None = None, params: Sequence[str] | None = None
) -> Tail:
    """Cut `model` into a frozen trunk and a tail: its last `layers` layers with parameters
    (default 1), all their parameters tuned; or, with `params`, exactly the named parameters
    tuned, the tail starting at the first layer holding one (the whole model where it cannot be
    cut into layers, see `layer_sequence`)."""
    if params is not None:
        if layers is not None:
            raise ValueError("give layers or params, not both: params names what to tune")
        return _split_named(model, tuple(params))
    layers = 1 if layers is None else layers
    check_layers(layers)
    try:
        seq = layer_sequence(model)
    except TypeError:
        if not _has_head_parts(model):
            raise
        return _split_head(model, layers)
    with_params = [i for i, (_, m) in enumerate(seq) if _has_parameters(m)]
    total = len(with_params)
    if total == 0:
        raise ValueError(
            f"{type(model).__name__} has no layer with parameters, so there is nothing to "
            "fine-tune: pass the model whose last layers TTT should tune"
        )
    n = total if layers == "all" else layers
    if n > total:
        names = ", ".join(f"{name or 'the model'} ({type(m).__name__})" for name, m in seq
                          if _has_parameters(m))  # fmt: skip
        raise ValueError(
            f"layers={layers} but {type(model).__name__} has {total} layers with parameters "
            f"({names}): choose layers from 1 to {total}, or 'all'"
        )
    cut = with_params[-n]
    return _cut(seq, cut, tuned_from=lambda name: True, depth=n)


def _has_head_parts(model: nn.Module) -> bool:
    return isinstance(getattr(model, "classifier", None), nn.Linear) and callable(
        getattr(model, "features", None)
    )


class _Features(nn.Module):
    """A model's `features(x)` as a module: the trunk of a model known only as features and
    classifier."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


def _split_head(model: nn.Module, layers: Layers) -> Tail:
    """A model with features() and classifier but no layer order: its classifier (layers=1) or
    all of it (layers='all'); nothing in between can be cut."""
    if layers == 1:
        tail = nn.Sequential(model.classifier)
        tail.training = model.classifier.training
        trunk = _Features(model)
        trunk.training = model.training
        tuned = tuple(n for n, _ in tail.named_parameters())
        return Tail(trunk, tail, tuned, ("classifier",), 1)
    if layers == "all":
        tuned = tuple(n for n, _ in model.named_parameters())
        depth = sum(next(m.parameters(recurse=False), None) is not None for m in model.modules())
        return Tail(nn.Identity(), model, tuned, (type(model).__name__,), depth)
    raise ValueError(
        f"layers={layers} but {type(model).__name__} is known only as features() and "
        "classifier, so it can be cut at its classifier (layers=1) or not at all (layers='all'): "
        "give it as_sequential() returning its layers in order to tune the last few"
    )


def _split_named(model: nn.Module, params: tuple[str, ...]) -> Tail:
    known = dict(model.named_parameters())
    if not params:
        raise ValueError("params is empty: name at least one parameter to tune, e.g. "
                         f"{list(known)[-2:]}")  # fmt: skip
    unknown = [p for p in params if p not in known]
    if unknown:
        raise ValueError(
            f"params names {unknown}, which {type(model).__name__} does not have: choose from "
            f"its parameters {list(known)}"
        )
    wanted = set(params)
    try:
        seq = layer_sequence(model)
    except TypeError:  # not cut into layers: the whole model runs per step
        depth = sum(next(m.parameters(recurse=False), None) is not None for m in model.modules())
        return Tail(nn.Identity(), model, params, (type(model).__name__,), depth)
    holds = [
        i for i, (name, m) in enumerate(seq)
        if any(_join(name, p) in wanted for p, _ in m.named_parameters())
    ]  # fmt: skip
    depth = sum(_has_parameters(m) for _, m in seq[holds[0] :])
    return _cut(seq, holds[0], tuned_from=lambda name: name in wanted, depth=depth)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _cut(seq, cut: int, tuned_from: Callable[[str], bool], depth: int) -> Tail:
    """Trunk = seq[:cut], tail = seq[cut:]; tuned: the tail's names of the parameters whose
    model names pass `tuned_from`."""
    trunk = nn.Sequential(*(m for _, m in seq[:cut])) if cut else nn.Identity()
    tail = nn.Sequential(*(m for _, m in seq[cut:]))
    for part, layers in ((trunk, seq[:cut]), (tail, seq[cut:])):
        # the containers' own flag: a mode restored recursively from it (as apply_model does)
        # must not put the model's layers into training mode
        part.training = any(m.training for _, m in layers)
    tuned = tuple(
        _join(str(i), p)
        for i, (name, m) in enumerate(seq[cut:])
        for p, _ in m.named_parameters()
        if tuned_from(_join(name, p))
    )
    return Tail(trunk, tail, tuned, tuple(name for name, _ in seq[cut:]), depth)


# ---- what cannot run one copy per point -------------------------------------------------------


def check_tail(tail: Tail, sample: torch.Tensor) -> None:
    """Refuse, before any training, a tail that cannot be fine-tuned one copy per test point:
    naming the layer and why. `sample`: a few tail inputs (at least one)."""
    names = {id(m): name for name, m in tail.tail.named_modules()}
    for m in tail.tail.modules():
        why = _unbatchable(m)
        if why:
            raise ValueError(f"layer {_named(tail, names[id(m)], m)} {why}")
    step = _grad_fn(tail, l2=0.0, start=_tuned(tail))
    x = torch.as_tensor(sample[:1]).float()
    x_BK = x.expand(2, 2, *x.shape[1:])
    P = _stacked(_tuned(tail), 2)
    try:
        with torch.no_grad():
            logits = functional_call(tail.tail, _params(tail), (x,))
        if logits.ndim != 2:
            raise ValueError(
                f"the tail maps one input to shape {tuple(logits.shape)}, not (1, classes): cut "
                "the model where its last layers end in class logits"
            )
        step(P, x_BK, torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2))
    except (RuntimeError, NotImplementedError, TypeError) as err:
        raise ValueError(_unvectorisable(tail, x, err)) from err


def _unbatchable(m: nn.Module) -> str | None:
    """Why one module cannot be tuned per point, where that can be told from its settings."""
    norm = nn.modules.batchnorm._BatchNorm
    if isinstance(m, (norm, nn.modules.instancenorm._InstanceNorm)) and (
        m.training and m.track_running_stats
    ):
        return (
            "is a batch norm in training mode: it would update its running statistics in place "
            "on every step, and those are shared by all test points; call model.eval() first"
        )
    if isinstance(m, norm) and not m.track_running_stats:
        return (
            "is a batch norm without running statistics: it normalises with the statistics of "
            "whatever batch it sees, so a test point's prediction would depend on its company; "
            "use a norm with running statistics, or leave the layer in the trunk"
        )
    if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
        return (
            "is dropout in training mode: its random masks would differ from the one-point loop "
            "at every step; call model.eval() first"
        )
    return None


def _unvectorisable(tail: Tail, x: torch.Tensor, err: Exception) -> str:
    """The message for a tail torch.func cannot vectorise: the first layer that fails alone."""
    names = {id(m): name for name, m in tail.tail.named_modules()}
    inputs = {}
    hooks = [
        m.register_forward_pre_hook(lambda m, args: inputs.setdefault(id(m), args[0]))
        for m in tail.tail.children()
    ]
    try:
        with torch.no_grad():
            tail.tail(x)
    except Exception:  # noqa: BLE001 -- a plain forward may fail too; probe what ran
        pass
    finally:
        for h in hooks:
            h.remove()
    for m in tail.tail.children():
        if id(m) not in inputs:
            continue
        own = {n: p.detach() for n, p in m.named_parameters()}
        try:
            vmap(functools.partial(functional_call, m))(
                _stacked(own, 2), inputs[id(m)].expand(2, *inputs[id(m)].shape)
            )
        except Exception as layer_err:  # noqa: BLE001 -- reported with the layer's name
            return (
                f"layer {_named(tail, names[id(m)], m)} cannot run one copy per test point under "
                f"torch.func.vmap ({layer_err}): tune fewer layers so it stays in the frozen "
                "trunk, or replace it with a layer torch can vectorise"
            )
    return (
        f"the tail ({', '.join(tail.layers)}) cannot be fine-tuned one copy per test point under "
        f"torch.func ({err}): tune fewer layers, or replace the layer torch cannot vectorise"
    )


def _named(tail: Tail, local: str, m: nn.Module) -> str:
    """A tail module's name in the model, e.g. 'feature_extractor.3 (Conv2d)'."""
    head, _, rest = local.partition(".")
    cut = isinstance(tail.tail, nn.Sequential) and head.isdigit() and int(head) < len(tail.layers)
    name = _join(tail.layers[int(head)], rest) if cut else local
    return f"'{name}' ({type(m).__name__})"


# ---- the engine -------------------------------------------------------------------------------


def _tuned(tail: Tail) -> dict[str, torch.Tensor]:
    named = dict(tail.tail.named_parameters())
    return {n: named[n].detach() for n in tail.tuned}


def _params(tail: Tail) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of the tail, detached: the global weights."""
    state = {n: p.detach() for n, p in tail.tail.named_parameters()}
    return state | dict(tail.tail.named_buffers())


def _stacked(params: dict[str, torch.Tensor], B: int) -> dict[str, torch.Tensor]:
    return {n: p.expand(B, *p.shape).clone() for n, p in params.items()}


def _grad_fn(tail: Tail, l2: float, start: dict[str, torch.Tensor]):
    """grads_B = f(P_B, X_BK..., y_BK, w_BK): each point's gradient of its mean cross-entropy over
    the neighbours of weight 1 (those of weight 0 are padding), plus l2 / 2 *
    ||theta - theta_global||^2, with respect to its own tuned parameters."""
    fixed = {n: v for n, v in _params(tail).items() if n not in start}

    def loss(p: dict[str, torch.Tensor], X_K: torch.Tensor, y_K: torch.Tensor, w_K: torch.Tensor):
        ce_K = F.cross_entropy(
            functional_call(tail.tail, (p, fixed), (X_K,)), y_K, reduction="none"
        )
        value = (ce_K * w_K).sum() / w_K.sum()
        if l2 > 0:
            value = value + l2 / 2 * sum(((p[n] - start[n]) ** 2).sum() for n in p)
        return value

    return vmap(grad(loss))


def _predict_fn(tail: Tail, start: dict[str, torch.Tensor]):
    """logits_BC = f(P_B, x_B...): each point's input under its own tuned parameters."""
    fixed = {n: v for n, v in _params(tail).items() if n not in start}

    def predict(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(tail.tail, (p, fixed), (_twice(x[None]),))[0]

    return vmap(predict)


def tail_finetune(
    tail: Tail, X_BK: torch.Tensor, y_BK: torch.Tensor, cfg: TTTConfig
) -> dict[str, torch.Tensor]:
    """B copies of the tail's tuned parameters, each fine-tuned on its point's first cfg.k
    neighbours: X_BK (B, K, *tail input) trunk outputs, y_BK (B, K) class indices. Returns the
    tail's names -> (B, *shape) tensors."""
    start = {n: p.to(X_BK.device) for n, p in _tuned(tail).items()}
    X_BK, y_BK = X_BK[:, : cfg.k], y_BK[:, : cfg.k]
    flat_BP, P = _flat_parameters(start, len(X_BK))
    if cfg.epochs == 0:
        return P
    step_grad = _grad_fn(tail, cfg.l2, start)
    grad_BP = torch.zeros_like(flat_BP)
    grads = {n: grad_BP[:, v.storage_offset() % flat_BP.shape[1] :][:, : v[0].numel()]
             for n, v in P.items()}  # fmt: skip
    moments = [torch.zeros_like(flat_BP)], [torch.zeros_like(flat_BP)]
    step = [torch.zeros((), dtype=torch.float32, device=X_BK.device)]
    # erm: all k neighbours at each step; sequential: one at a time, nearest first
    batches = [slice(None)] if cfg.method == "erm" else [slice(j, j + 1) for j in range(cfg.k)]
    beta1, beta2 = cfg.betas
    for _ in range(cfg.epochs):
        for batch in batches:
            G = step_grad(P, *_even(X_BK[:, batch], y_BK[:, batch]))
            for n, g in G.items():
                grads[n].copy_(g.reshape(len(g), -1))
            adam(
                [flat_BP], [grad_BP], *moments, [], step, fused=True, amsgrad=False,
                beta1=beta1, beta2=beta2, lr=cfg.lr, weight_decay=0.0, eps=cfg.eps,
                maximize=False,
            )  # fmt: skip
    return P


def _twice(x: torch.Tensor) -> torch.Tensor:
    """One input as a batch of two copies of it (see `_even`)."""
    return torch.cat([x, x])


def _even(X_BK: torch.Tensor, y_BK: torch.Tensor):
    """(X_BK, y_BK, w_BK) with an even number of neighbours: an odd batch gets a copy of its first
    neighbour of weight 0, which adds nothing to the loss. Why: CPU kernels take other paths for
    a batch of one or a small odd batch (a grouped convolution's or a batched matmul's bits then
    depend on the point's place in its chunk)."""
    B, K = y_BK.shape
    w_BK = X_BK.new_ones(B, K)
    if K % 2:
        X_BK, y_BK = torch.cat([X_BK, X_BK[:, :1]], 1), torch.cat([y_BK, y_BK[:, :1]], 1)
        w_BK = torch.cat([w_BK, w_BK.new_zeros(B, 1)], 1)
    return X_BK, y_BK, w_BK


ALIGN = 16
"""Floats each point's parameters are padded to a multiple of: Adam's fused CPU kernel runs its
vector path on whole blocks and a scalar path on the rest, with other bits, so a point's values
would otherwise depend on where in the chunk it sits."""


def _flat_parameters(
    start: dict[str, torch.Tensor], B: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """B copies of the tuned parameters in one (B, P) buffer, each point's row padded with zeros
    to a multiple of ALIGN floats, and views of it by name, (B, *shape)."""
    sizes = [p.numel() for p in start.values()]
    width = -(-sum(sizes) // ALIGN) * ALIGN
    some = next(iter(start.values()))
    flat_BP = some.new_zeros(B, width)
    views, offset = {}, 0
    for (n, p), size in zip(start.items(), sizes, strict=True):
        part = flat_BP[:, offset : offset + size]
        part.copy_(p.reshape(1, -1).expand(B, -1))
        views[n] = part.unflatten(1, p.shape)
        offset += size
    return flat_BP, views


def point_bytes(tail: Tail, sample: torch.Tensor, k: int) -> int:
    """Working memory of one test point (float32): k neighbours' activations through the tail,
    kept for the backward pass and their gradients, and its tuned parameters with Adam's moments
    and gradient."""
    sizes = []
    hooks = [
        m.register_forward_hook(lambda m, args, out: sizes.append(out.numel()))
        for m in tail.tail.modules()
        if not isinstance(m, nn.Sequential)
    ]
    try:
        with torch.no_grad():
            tail.tail(torch.as_tensor(sample[:1]).float())
    finally:
        for h in hooks:
            h.remove()
    params = sum(p.numel() for p in _tuned(tail).values())
    return 4 * (3 * k * (sum(sizes) + sample[:1].numel()) + 5 * params)


def auto_chunk_size(tail: Tail, sample: torch.Tensor, k: int, device="cpu") -> int:
    """Test points per chunk, from the tail's shape and the device alone (never free memory):
    TAIL_CHUNK_BYTES of working memory, in whole points per CPU thread."""
    device = torch.device(device)
    budget = TAIL_CHUNK_BYTES["cuda" if device.type == "cuda" else "cpu"]
    chunk = int(max(2, min(budget // point_bytes(tail, sample, k), 4096)))
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    return max(threads, chunk // threads * threads)


def tail_logits(
    tail: Tail,
    pool_x: torch.Tensor | np.ndarray,
    pool_y: torch.Tensor | np.ndarray,
    query_x: torch.Tensor | np.ndarray,
    neighbours: torch.Tensor | np.ndarray,
    cfg: TTTConfig,
    device: torch.device | str = "cpu",
    progress: bool = False,
    linear_engine: bool = True,
) -> torch.Tensor:
    """Logits (B x C, float32, CPU) of each query under its own tail fine-tuned on its neighbours.

    pool_x, query_x: the tail's inputs (`Tail.inputs` of the pool and the queries); neighbours:
    B x (k or more) pool indices, nearest first; cfg.chunk_size: points per chunk (None: from the
    tail's shape, `auto_chunk_size`).
    linear_engine: hand a tail that is one nn.Linear to the closed-form engine (faster, the same
    predictions); False runs it here.
    """
    device = torch.device(device)
    pool_x, query_x = _as_inputs(pool_x, "pool_x"), _as_inputs(query_x, "query_x")
    if pool_x.shape[1:] != query_x.shape[1:]:
        raise ValueError(
            f"pool_x has inputs of shape {tuple(pool_x.shape[1:])} but query_x of shape "
            f"{tuple(query_x.shape[1:])}: pass the tail's inputs for both (Tail.inputs)"
        )
    linear = tail.linear if linear_engine else None
    if linear is not None and pool_x.ndim == 2:
        return ttt_logits(
            linear.weight, linear.bias, pool_x, pool_y, query_x, neighbours, cfg, device, progress
        )
    check_tail(tail, pool_x[:1])
    C = _classes(tail, pool_x[:1])
    pool_y = as_class_indices(pool_y, len(pool_x), C, "pool_y")
    neighbours = _check_neighbours(neighbours, len(query_x), len(pool_x), cfg)
    chunk = cfg.chunk_size or auto_chunk_size(tail, pool_x[:1], cfg.k, device)
    B = len(query_x)
    model = copy.deepcopy(tail.tail).to(device)
    on_device = Tail(tail.trunk, model, tail.tuned, tail.layers, tail.depth)
    predict = _predict_fn(on_device, _tuned(on_device))
    out_BC = torch.empty(B, C, dtype=torch.float32)
    bar = tqdm(total=B, desc=f"ttt tail ({cfg.method})", unit="pt", disable=not progress,
               leave=False)  # fmt: skip
    for s in range(0, B, chunk):
        rows = torch.arange(s, min(s + chunk, B))
        n = len(rows)
        rows = torch.cat([rows, rows[-1].expand(_padded_chunk(n, device) - n)])
        nbr = neighbours[rows]
        P = tail_finetune(on_device, pool_x[nbr].to(device), pool_y[nbr].to(device), cfg)
        with torch.no_grad():
            out_BC[s : s + n] = predict(P, query_x[rows].to(device))[:n].float().cpu()
        bar.update(n)
    bar.close()
    bad = int((~torch.isfinite(out_BC).all(1)).sum())
    if bad:
        raise NonFiniteError(_diverged(bad, B, "logits", cfg))
    return out_BC


def _as_inputs(x, name: str) -> torch.Tensor:
    """Float32 CPU tensor of at least one input, finite."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float32) if _is_numpy(x) else x)
    if x.ndim < 2 or len(x) == 0 or not x.is_floating_point():
        raise ValueError(
            f"{name} must hold at least one floating-point input as rows (N, ...), got shape "
            f"{tuple(x.shape)} and dtype {x.dtype}"
        )
    x = x.float().cpu()
    _check_finite_rows(x.reshape(len(x), -1), name)
    return x


def _is_numpy(x) -> bool:
    return isinstance(x, np.ndarray)


def _classes(tail: Tail, sample: torch.Tensor) -> int:
    with torch.no_grad():
        return int(functional_call(tail.tail, _params(tail), (sample,)).shape[1])
