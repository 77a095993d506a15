"""The ladder's one shared tokenizer: byte-level BPE (the `tokenizers` library, GPT-2's scheme)
trained on the pool documents only, so every size reads the same tokens and no test text leaks.

    tok = train_tokenizer(pool_texts, vocab=4096)
    save_tokenizer(tok, folder / "tokenizer.json"); tok = load_tokenizer(folder / "tokenizer.json")
    ids = tok.encode("text").ids
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tttlab.atomic import atomic_write_text
from tttlab.checks import check_int

BOS = "<|endoftext|>"
"""Starts every document (and separates documents in the training stream); id 0."""


def train_tokenizer(texts: Sequence[str], vocab: int = 4096):
    """A byte-level BPE of `vocab` tokens (BOS included) learned from `texts`; deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    check_int(vocab, "vocab", min=257 + 1)  # the 256 bytes and BOS, plus at least one merge
    if not texts:
        raise ValueError("no texts to learn a tokenizer from: build the corpus first")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    return tok


def save_tokenizer(tok, path: str | Path) -> Path:
    """Write the tokenizer's JSON atomically."""
    return atomic_write_text(Path(path), tok.to_str())


def load_tokenizer(path: str | Path):
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no tokenizer at {path}: train the ladder first (`tttlab lm train`)"
        )
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the tokenizers library reports a damaged file as a bare Exception
        raise ValueError(
            f"{path} is not a tokenizer file ({str(err)[:200]}): delete it (a cache entry) so the "
            "ladder's tokenizer is trained again"
        ) from None
