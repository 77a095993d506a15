"""A Pile-like text corpus from Debian packages: ~1 KB documents, a test set held out by source
file, near-copies of test documents removed from the pool, every package's version, licence and
checksum recorded. Each package is one subset (kernel, Python and Perl docs, a dictionary,
fortunes, man pages, Go's standard library as code), as the Pile reports its sources.

    cfg = CorpusConfig()                 # the default mix
    build_corpus(cfg, "corpus")          # or: tttlab lm corpus --out corpus
    corpus = load_corpus("corpus")       # corpus.pool, corpus.test: lists of Doc (doc.package)

Packages are fetched with `apt-get download` (or taken from --deb-dir) and unpacked with
`dpkg-deb -x` into a temp folder: nothing is installed. Each package is written once, so an
interrupted build resumes at the first unfinished package. The leak guard (`tttlab.lm.leaks`) runs
when the split is assembled; corpus.json records what it removed, and leaks.jsonl holds it.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from tttlab.atomic import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    clean_stale_temps,
    file_sha256,
    temp_dir,
    to_jsonable,
)
from tttlab.files import FileError, need, read_json_object, read_jsonl
from tttlab.keys import settings_digest
from tttlab.lm.config import CorpusConfig
from tttlab.lm.leaks import NUM_PERM, SHINGLE_WORDS, near_duplicates

# Markup, assets and indexes: text a language model should not learn from, or binary anyway.
# python3.11-doc's reST sources are `_sources/*.rst.txt`, so `.txt` stays.
SKIP_SUFFIXES = frozenset(
    ".html .htm .xhtml .js .css .svg .png .jpg .jpeg .gif .ico .bmp .inv .dat .json .map .pdf "
    ".woff .woff2 .ttf .otf .eot .index .devhelp .buildinfo .pickle .pyc .mo .zip".split()
)
_COMPRESSED = (".gz", ".dz")  # dictzip (.dz) is gzip with an index in the header


class CorpusError(ValueError):
    """A package could not be turned into documents; the message names the package and the fix."""


DOC_FIELDS = ("id", "package", "source", "text")


@dataclass(frozen=True)
class Doc:
    """One document: about doc_bytes of one source file."""

    id: str
    """`<package>/<relpath>#<n>`: stable across builds with the same settings."""
    package: str
    source: str
    """The file's path inside the package (symlinks resolved)."""
    text: str

    @property
    def n_bytes(self) -> int:
        return len(self.text.encode("utf-8"))


@dataclass
class Corpus:
    """A built corpus: the retrieval pool, the held-out test documents, and corpus.json."""

    pool: list[Doc]
    test: list[Doc]
    record: dict
    removed: list[Doc] = field(default_factory=list)
    """Pool documents the leak guard removed as near-copies of test documents (leaks.jsonl)."""

    digests: dict[str, str] = dataclasses.field(default_factory=dict)
    """sha256 of pool.jsonl and test.jsonl: the documents' bytes."""

    @property
    def key(self) -> str:
        """Identifies the corpus in cache keys: its record (settings, packages, counts) and the
        bytes of its documents, so a corpus whose texts were replaced is another corpus."""
        return settings_digest({"record": self.record, "documents": self.digests})[:16]


_REDO_PACKAGE = "delete it and its .json beside it, then run the same command to redo the package"
_REBUILD = "rebuild the corpus with `tttlab lm corpus --out FOLDER` (a new folder)"


def load_corpus(folder: str | Path) -> Corpus:
    """Read a corpus folder written by `build_corpus`; every file and row is checked."""
    folder = Path(folder)
    if not (folder / "corpus.json").is_file():
        raise FileNotFoundError(
            f"{folder} holds no finished corpus (no corpus.json): build it with "
            f"`tttlab lm corpus --out {folder}`"
        )
    record = read_json_object(folder / "corpus.json", "a corpus record", _REBUILD)
    need(record, "config", dict, folder / "corpus.json", _REBUILD)
    files = {split: folder / f"{split}.jsonl" for split in ("pool", "test")}
    leaks = folder / "leaks.jsonl"
    return Corpus(
        _read_docs(files["pool"]),
        _read_docs(files["test"]),
        record,
        removed=_read_docs(leaks) if leaks.is_file() else [],
        digests={split: file_sha256(path) for split, path in files.items()},
    )


def _read_docs(path: Path) -> list[Doc]:
    docs = []
    for line, row in read_jsonl(path, "a corpus file of documents", _REBUILD):
        values = {key: need(row, key, str, path, _REBUILD, f"line {line}") for key in DOC_FIELDS}
        docs.append(Doc(**values))
    return docs


def build_corpus(cfg: CorpusConfig, out: str | Path, progress: bool = True) -> Path:
    """Build (or resume, or reuse) the corpus folder `out`: per-package documents, pool.jsonl,
    test.jsonl, and corpus.json last, which marks it complete."""
    out = Path(out)
    settings = to_jsonable(dataclasses.asdict(cfg))
    for name in ("corpus.json", "config.json"):  # config.json: a build under way
        if (out / name).is_file():
            record = read_json_object(out / name, "a corpus record", _REBUILD)
            _check_same(need(record, "config", dict, out / name, _REBUILD), settings, out)
    if (out / "corpus.json").is_file():
        return out
    for sub in (out, out / "debs", out / "packages"):
        sub.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(sub)
    atomic_write_json(out / "config.json", {"config": settings})
    records = [_package(cfg, pkg, out, progress) for pkg in cfg.packages]
    rows: dict[str, list[dict]] = {"pool": [], "test": []}
    for pkg in cfg.packages:
        path = out / "packages" / f"{pkg}.jsonl"
        for line, row in read_jsonl(path, "a package's documents", _REDO_PACKAGE):
            split = row.pop("split", None)
            if split not in rows:
                raise FileError(f"{path}: line {line} has no split pool or test: {_REDO_PACKAGE}")
            rows[split].append(row)
    rows["pool"], removed, guard = _leak_guard(rows["pool"], rows["test"], cfg, progress)
    for split, part in (*rows.items(), ("leaks", removed)):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
        atomic_write_text(out / f"{split}.jsonl", text)
    totals = {k: sum(r[k] for r in records) for k in ("docs_test", "bytes_test", "files_read")}
    totals["docs_pool"] = len(rows["pool"])
    totals["bytes_pool"] = sum(len(r["text"].encode("utf-8")) for r in rows["pool"])
    atomic_write_json(out / "corpus.json", {"config": settings, "packages": records,
                                            "leak_guard": guard, "totals": totals})  # fmt: skip
    return out


def _leak_guard(
    pool: list[dict], test: list[dict], cfg: CorpusConfig, progress: bool
) -> tuple[list[dict], list[dict], dict]:
    """The pool without near-copies of test documents, the removed documents (each with the test
    document it copies and their Jaccard index), and corpus.json's record of them."""
    if progress:
        print(f"leak guard: {len(pool)} pool x {len(test)} test documents", flush=True)
    pairs = near_duplicates([r["text"] for r in pool], [r["text"] for r in test],
                            cfg.near_dup_threshold)  # fmt: skip
    gone = {i: (test[j]["id"], round(jac, 4)) for i, j, jac in pairs}
    removed = [pool[i] | {"copies": gone[i][0], "jaccard": gone[i][1]} for i in sorted(gone)]
    record = {
        "method": f"Jaccard index of word {SHINGLE_WORDS}-shingles >= threshold; candidates by "
        f"MinHash LSH ({NUM_PERM} permutations, datasketch), each checked exactly",
        "threshold": cfg.near_dup_threshold,
        "removed": len(removed),
        "removed_by_package": dict(Counter(r["package"] for r in removed)),
        "pairs": [[r["id"], r["copies"], r["jaccard"]] for r in removed],
    }
    return [r for i, r in enumerate(pool) if i not in gone], removed, record


def _check_same(old: dict, new: dict, out: Path) -> None:
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if differ:
        was = ", ".join(f"{k}={old.get(k)!r} (now {new.get(k)!r})" for k in differ)
        raise ValueError(
            f"{out} holds a corpus built with other settings: {was}; build into a new folder "
            "(--out) or use the same settings"
        )


def _package(cfg: CorpusConfig, pkg: str, out: Path, progress: bool) -> dict:
    """One package's documents and record, from `<out>/packages/` when already done."""
    docs_path, record_path = out / "packages" / f"{pkg}.jsonl", out / "packages" / f"{pkg}.json"
    if record_path.is_file() and docs_path.is_file():
        record = read_json_object(record_path, "a package record", _REDO_PACKAGE)
        for name in ("docs_pool", "docs_test", "bytes_pool", "bytes_test", "files_read"):
            need(record, name, int, record_path, _REDO_PACKAGE)
        return record
    deb, downloaded = _find_deb(cfg, pkg, out / "debs")
    tree = temp_dir(out, ".tmp-unpack-")
    try:
        version = _dpkg_deb(["-f", str(deb), "Version"], pkg, deb, downloaded).strip()
        _dpkg_deb(["-x", str(deb), str(tree)], pkg, deb, downloaded)
        docs, files_read, skipped = _documents(cfg, pkg, tree.resolve(), progress)
        licence = _licence(tree, pkg)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    if not docs:
        raise CorpusError(
            f"{pkg} yields no documents ({dict(skipped)} files skipped): drop it from --packages, "
            "or lower --min-doc-bytes if its files are short"
        )
    pool_files = {d["source"] for d in docs if d["split"] == "pool"}
    if any(d["source"] in pool_files for d in docs if d["split"] == "test"):
        raise AssertionError(f"{pkg}: a test document shares its source file with the pool")
    with atomic_path(docs_path) as tmp, tmp.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    record = {
        "name": pkg, "version": version, "licence": licence, "deb": deb.name,
        "deb_sha256": file_sha256(deb), "files_read": files_read, "files_skipped": dict(skipped),
    }  # fmt: skip
    for split in ("pool", "test"):
        part = [d for d in docs if d["split"] == split]
        record[f"docs_{split}"] = len(part)
        record[f"bytes_{split}"] = sum(len(d["text"].encode("utf-8")) for d in part)
    atomic_write_json(record_path, record)
    return record


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(
            f"`{name}` is not installed: building the corpus needs Debian's {name} (package "
            f"{package}); run on Debian or Ubuntu, or pass --deb-dir and install {package}"
        )
    return path


def _find_deb(cfg: CorpusConfig, pkg: str, debs: Path) -> tuple[Path, bool]:
    """The package's .deb from --deb-dir or the download cache, else `apt-get download` it;
    returns the path and whether it is a download (ours to delete if corrupt)."""
    if cfg.deb_dir is not None:
        found = sorted(Path(cfg.deb_dir).glob(f"{pkg}_*.deb"))
        if len(found) != 1:
            have = sorted(p.name for p in Path(cfg.deb_dir).glob("*.deb"))
            what = "no" if not found else f"{len(found)}"
            raise CorpusError(
                f"--deb-dir {cfg.deb_dir} has {what} .deb files for package {pkg} "
                f"(`{pkg}_<version>_<arch>.deb`); it has {have or 'no .deb files'}: add exactly "
                "one, or drop the package from --packages"
            )
        return found[0], False
    cached = sorted(debs.glob(f"{pkg}_*.deb"))
    if cached:
        return cached[-1], True
    apt = _tool("apt-get", "apt")
    tmp = temp_dir(debs, ".tmp-download-")
    try:
        run = subprocess.run([apt, "download", pkg], cwd=tmp, capture_output=True, text=True)
        got = sorted(tmp.glob(f"{pkg}_*.deb"))
        if run.returncode != 0 or len(got) != 1:
            tail = "\n".join(run.stderr.strip().splitlines()[-5:])
            raise CorpusError(
                f"apt-get could not download package {pkg}:\n{tail}\ncheck the name with "
                f"`apt-cache policy {pkg}`, run `apt-get update`, or pass --deb-dir with the .deb"
            )
        os.replace(got[0], debs / got[0].name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return debs / got[0].name, True


def _dpkg_deb(args: list[str], pkg: str, deb: Path, downloaded: bool) -> str:
    run = subprocess.run([_tool("dpkg-deb", "dpkg"), *args], capture_output=True, text=True)
    if run.returncode != 0:
        if downloaded:
            deb.unlink(missing_ok=True)
            fix = "removed the cached copy, so the next run downloads it again"
        else:
            fix = f"replace {deb} with a good copy (`apt-get download {pkg}`)"
        tail = "\n".join(run.stderr.strip().splitlines()[-3:])
        raise CorpusError(f"the .deb of {pkg} ({deb.name}) does not unpack:\n{tail}\n{fix}")
    return run.stdout


def _licence(tree: Path, pkg: str) -> dict:
    """The `License:` short names of usr/share/doc/<pkg>/copyright (or its first line)."""
    path = tree / "usr/share/doc" / pkg / "copyright"
    real = path.resolve()
    if not path.is_file() or not real.is_relative_to(tree.resolve()):
        return {"names": [], "first_line": "", "copyright_sha256": None}
    text = real.read_text(encoding="utf-8", errors="replace")
    dep5 = text.startswith("Format:")  # machine-readable: `License:` lines hold short names
    found = re.findall(r"^License:[ \t]*(\S[^\n]*)", text, re.M) if dep5 else []
    names = list(dict.fromkeys(found))
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return {"names": names, "first_line": first, "copyright_sha256": file_sha256(real)}


def _files(root: Path, skipped: Counter) -> list[Path]:
    """Every regular file of the unpacked tree once, by real path: symlinks are followed while
    they stay inside the tree (python3.11-doc reaches its sources several times)."""
    seen_dirs, files, stack = set(), set(), [root]
    while stack:
        folder = stack.pop()
        if folder in seen_dirs:
            skipped["duplicate path"] += 1  # a symlinked folder, skipped whole
            continue
        seen_dirs.add(folder)
        for entry in folder.iterdir():
            real = entry.resolve()
            if not real.is_relative_to(root) or not real.exists():
                skipped["link leaving the package"] += 1
            elif real.is_dir():
                stack.append(real)
            elif real in files:
                skipped["duplicate path"] += 1
            elif real.is_file():
                files.add(real)
    return sorted(files)


def _read_text(path: Path, min_bytes: int) -> tuple[str | None, str]:
    """The file's text (gzip and dictzip decompressed), or None and why it is skipped."""
    name = path.name.lower()
    inner = name[:-3] if name.endswith(_COMPRESSED) else name
    if Path(inner).suffix in SKIP_SUFFIXES:
        return None, "markup or asset suffix"
    data = path.read_bytes()
    if inner != name:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            return None, "bad compressed data"
    if len(data) < min_bytes:
        return None, "short"
    if b"\0" in data:
        return None, "binary"
    text = data.decode("utf-8", errors="replace")
    # A few stray bytes (dict-gcide's 40 MB has cp1252 quotes) do not make a text file binary.
    if text.count("\ufffd") > len(data) / 10_000:
        return None, "binary"
    if "Automatically generated by Pod::Man" in text[:2000]:
        return None, "man page generated from a .pod in the package"  # perl-doc ships both
    return text, ""


def cut_documents(text: str, doc_bytes: int, min_doc_bytes: int) -> list[str]:
    """Cut text into documents of about doc_bytes at line breaks; a line over 2 * doc_bytes is cut
    at a character boundary; fragments under min_doc_bytes are dropped."""
    docs, lines, size = [], [], 0
    for line in text.splitlines(keepends=True):
        raw = line.encode("utf-8")
        pieces = [line] if len(raw) <= 2 * doc_bytes else _cut_bytes(raw, doc_bytes)
        for piece in pieces:
            lines.append(piece)
            size += len(piece.encode("utf-8"))
            if size >= doc_bytes:
                docs.append("".join(lines))
                lines, size = [], 0
    if size >= min_doc_bytes:
        docs.append("".join(lines))
    return [d for d in docs if len(d.encode("utf-8")) >= min_doc_bytes]


def _cut_bytes(raw: bytes, n: int) -> list[str]:
    """UTF-8 bytes in pieces of at most n bytes, never inside a character."""
    pieces, start = [], 0
    while start < len(raw):
        end = min(start + n, len(raw))
        while end < len(raw) and raw[end] & 0xC0 == 0x80:  # a continuation byte: step back
            end -= 1
        pieces.append(raw[start:end].decode("utf-8"))
        start = end
    return pieces


def _is_test(cfg: CorpusConfig, pkg: str, source: str) -> bool:
    """A stable, seeded coin per source file, so a file's documents all land on one side."""
    digest = hashlib.sha256(f"{cfg.seed}\0{pkg}\0{source}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < cfg.test_fraction


def _documents(cfg: CorpusConfig, pkg: str, root: Path, progress: bool):
    """The package's documents (in source order), the number of files read, and skips by reason.

    Files are read in a seeded order until max_docs_per_package; the file that reaches the cap
    gives its first documents only (dict-gcide is one file)."""
    skipped: Counter = Counter()
    files = _files(root, skipped)
    random.Random(f"{cfg.seed}/{pkg}").shuffle(files)
    cap = cfg.max_docs_per_package or float("inf")
    chosen, seen, n_docs = {}, set(), 0
    for i, path in enumerate(tqdm(files, desc=pkg, unit="file", disable=not progress)):
        if n_docs >= cap:
            skipped["not read (cap reached)"] += len(files) - i
            break
        text, why = _read_text(path, cfg.min_doc_bytes)
        if text is not None:
            digest = hashlib.sha256(text.encode("utf-8")).digest()
            why = "duplicate content" if digest in seen else ""
            seen.add(digest)
        docs = [] if text is None or why else cut_documents(text, cfg.doc_bytes, cfg.min_doc_bytes)
        if not docs:
            skipped[why or "short"] += 1
            continue
        docs = docs[: int(min(len(docs), cap - n_docs))]
        chosen[str(path.relative_to(root))] = docs
        n_docs += len(docs)
    rows = []
    for source in sorted(chosen):
        split = "test" if _is_test(cfg, pkg, source) else "pool"
        for n, text in enumerate(chosen[source]):
            rows.append({"id": f"{pkg}/{source}#{n}", "package": pkg, "source": source,
                         "text": text, "split": split})  # fmt: skip
    return rows, len(chosen), skipped
