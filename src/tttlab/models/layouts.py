"""Checkpoint layouts tttlab recognises: its own models' keys, and those of the files the paper's
authors released (patrikwolf/ttt_theory), renamed to tttlab's modules on load.

Plain Python (no torch): a state dict is only renamed here, and the config checks
`checkpoint_keys` with `key_renames` without importing torch.

    state, layout = recognise(load_state("mnist_linear_classifier_ns500.pth")[0])
    layout.kind   # "linear": keys layer.weight, layer.bias became classifier.weight, .bias
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

CNN_KEYS = (
    "feature_extractor.0.weight",
    "feature_extractor.0.bias",
    "feature_extractor.3.weight",
    "feature_extractor.3.bias",
    "classifier.weight",
    "classifier.bias",
)
LINEAR_KEYS = ("classifier.weight", "classifier.bias")
MLP_KEYS = ("hidden.0.weight", "hidden.0.bias", "classifier.weight", "classifier.bias")


@dataclass(frozen=True)
class Layout:
    """One checkpoint layout: exactly these keys, renamed by prefix to tttlab's modules."""

    name: str
    kind: str
    """The tttlab model it loads into: cnn, linear or mlp."""
    keys: tuple[str, ...]
    renames: tuple[tuple[str, str], ...] = ()
    """(old prefix, new prefix) pairs that map `keys` onto tttlab's own."""


LAYOUTS = (
    Layout(
        "CNN: tttlab's, and the authors' FlexibleLeNet (torch_global_classifier_mnist_*.pth, "
        "mnist_scaled_model_*.pth)",
        "cnn",
        CNN_KEYS,
    ),
    Layout("tttlab linear head", "linear", LINEAR_KEYS),
    Layout("tttlab MLP head", "mlp", MLP_KEYS),
    Layout(
        "the authors' TorchLinearClassifier (mnist_linear_classifier_*.pth, "
        "torch_linear_classifier_imagenet_*.pth)",
        "linear",
        ("layer.weight", "layer.bias"),
        (("layer.", "classifier."),),
    ),
    Layout(
        "the authors' TorchMLPClassifier (torch_mlp_classifier_*.pth)",
        "mlp",
        ("layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"),
        (("layer1.", "hidden.0."), ("layer2.", "classifier.")),
    ),
)
"""Every layout tttlab loads without --checkpoint-keys."""

V = TypeVar("V")


def key_renames(renames: tuple[str, ...]) -> list[tuple[str, str]]:
    """`checkpoint_keys` entries OLD=NEW as (old prefix, new prefix) pairs, each checked."""
    pairs = []
    for rename in renames:
        old, sep, new = str(rename).partition("=")
        if not sep or not old or "=" in new:
            raise ValueError(
                f"checkpoint_keys entry {rename!r} must read OLD=NEW, a key prefix and its "
                "replacement, e.g. layer.=classifier. or module.="
            )
        pairs.append((old, new))
    return pairs


def rename_keys(state: Mapping[str, V], renames: list[tuple[str, str]]) -> dict[str, V]:
    """Each key with the first matching old prefix replaced by its new one."""
    out: dict[str, V] = {}
    for key, value in state.items():
        new = next((n + key[len(o) :] for o, n in renames if key.startswith(o)), key)
        if new in out:
            raise ValueError(
                f"checkpoint_keys maps two keys onto {new!r}: make the renames distinct"
            )
        out[new] = value
    return out


def recognise(
    state: Mapping[str, V], renames: tuple[str, ...] = (), where: str = "the checkpoint"
) -> tuple[dict[str, V], Layout]:
    """(state under tttlab's key names, its layout), after the user's renames; a layout that
    matches none names the keys found and the layouts known."""
    state = rename_keys(state, key_renames(renames))
    for layout in LAYOUTS:
        if set(state) == set(layout.keys):
            return rename_keys(state, list(layout.renames)), layout
    known = "\n".join(f"  {lay.name}: {', '.join(lay.keys)}" for lay in LAYOUTS)
    shown = ", ".join(sorted(state)[:12]) + (" ..." if len(state) > 12 else "")
    raise ValueError(
        f"{where} has keys {shown}, which match no layout tttlab knows:\n{known}\n"
        "Map its keys onto one of these with --checkpoint-keys OLD=NEW (key prefixes, e.g. "
        "module.= or fc.=classifier.), or re-save it from a tttlab model"
    )


def describe(layout: Layout, state: Mapping[str, Any]) -> str:
    """The layout and its shape, e.g. "the authors' TorchLinearClassifier, 50 -> 10"."""
    weight = state["classifier.weight"]
    return f"{layout.name.split(' (')[0]}, {weight.shape[1]} -> {weight.shape[0]}"
