"""`build_corpus` and `tttlab lm corpus` on small .deb files built here with `dpkg-deb --build`."""

import gzip
import json
import shutil
import subprocess

import pytest

from tttlab.cli import main
from tttlab.lm import corpus as corpus_mod
from tttlab.lm.corpus import (
    Corpus,
    CorpusConfig,
    CorpusError,
    build_corpus,
    cut_documents,
    load_corpus,
)

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs Debian's dpkg-deb")
LINE = "The quick brown fox jumps over the lazy dog, and the dog does not mind. {}\n"


def make_deb(folder, package, files, links=()):
    """A .deb of `package` holding `files` ({path: str or bytes}) and `links` ({link: target})."""
    root = folder / f"src-{package}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN").chmod(0o755)
    (root / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: T <t@example.org>\n"
        "Description: test documents\n"
    )
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data if isinstance(data, bytes) else data.encode())
    for link, target in dict(links).items():
        (root / link).symlink_to(target)
    deb = folder / f"{package}_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "-Zgzip", "--root-owner-group", "--build", str(root), str(deb)],
                   check=True, capture_output=True)  # fmt: skip
    shutil.rmtree(root)
    return deb


def text(n_lines, tag):
    return "".join(LINE.format(f"{tag}-{i}") for i in range(n_lines))


@pytest.fixture(scope="module")
def deb_dir(tmp_path_factory):
    """fake-doc: 12 text files, a symlink to one, a symlinked copy of its folder, a gzipped file,
    a binary file, an HTML page and a short file; fake-dict: one dictzip-like .dz file."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs Debian's dpkg-deb to build test packages")
    folder = tmp_path_factory.mktemp("debs")
    doc = "usr/share/doc/fake-doc"
    files = {f"{doc}/copyright": "Format: x\n\nFiles: *\nCopyright: 2024 T\nLicense: GPL-2\n"}
    files |= {f"{doc}/guide/part{i}.txt": text(20 + 10 * i, f"p{i}") for i in range(12)}
    files[f"{doc}/notes.txt.gz"] = gzip.compress(text(40, "gz").encode())
    files[f"{doc}/data.bin"] = b"\0\1\2" * 500
    files[f"{doc}/page.html"] = "<html>" + text(40, "html")
    files[f"{doc}/tiny.txt"] = "too short\n"
    links = {f"{doc}/link.txt": "guide/part3.txt", f"{doc}/mirror": "guide"}
    make_deb(folder, "fake-doc", files, links)
    make_deb(folder, "fake-dict", {"usr/share/dictd/fake.dict.dz": gzip.compress(
        ("élan — ünïcode " * 40 + "\n").encode() * 30)})  # fmt: skip
    return folder


def config(deb_dir, **kw):
    kw = {"packages": ("fake-doc", "fake-dict"), "test_fraction": 0.3, "deb_dir": str(deb_dir)} | kw
    return CorpusConfig(**kw)


def test_documents_are_about_doc_bytes_each_file_once_and_split_by_file(deb_dir, tmp_path):
    out = build_corpus(config(deb_dir), tmp_path / "corpus", progress=False)
    corpus = load_corpus(out)
    docs = corpus.pool + corpus.test
    assert corpus.pool and corpus.test
    assert all(256 <= d.n_bytes < 3 * 1024 for d in docs)
    assert sum(d.n_bytes >= 1024 for d in docs) > 0.7 * len(docs)
    sources = {d.source for d in docs if d.package == "fake-doc"}
    # the symlink and the symlinked folder are read once, under the real path
    assert sources == {f"usr/share/doc/fake-doc/guide/part{i}.txt" for i in range(12)} | {
        "usr/share/doc/fake-doc/notes.txt.gz"}  # fmt: skip
    assert {d.source for d in corpus.pool}.isdisjoint(d.source for d in corpus.test)
    assert docs[0].id == f"{docs[0].package}/{docs[0].source}#0"
    dict_docs = [d for d in docs if d.package == "fake-dict"]
    assert "élan" in dict_docs[0].text and all(d.text.isprintable() or "\n" in d.text
                                               for d in dict_docs)  # fmt: skip
    (doc,) = [p for p in corpus.record["packages"] if p["name"] == "fake-doc"]
    assert doc["version"] == "1.0-1" and doc["licence"]["names"] == ["GPL-2"]
    assert doc["files_skipped"]["duplicate path"] == 2  # link.txt and the folder mirror/
    assert {"binary", "markup or asset suffix", "short"} <= doc["files_skipped"].keys()
    assert not list(out.glob(".tmp-*"))  # the unpacked trees are gone


def test_same_settings_reuse_the_folder_and_give_the_same_ids(deb_dir, tmp_path):
    first = load_corpus(build_corpus(config(deb_dir), tmp_path / "a", progress=False))
    stamp = (tmp_path / "a/corpus.json").stat().st_mtime_ns
    build_corpus(config(deb_dir), tmp_path / "a", progress=False)
    assert (tmp_path / "a/corpus.json").stat().st_mtime_ns == stamp  # no work done
    second = load_corpus(build_corpus(config(deb_dir), tmp_path / "b", progress=False))
    assert [d.id for d in first.test] == [d.id for d in second.test]
    assert first.pool == second.pool
    with pytest.raises(ValueError, match=r"doc_bytes=1024 \(now 512\).*new folder"):
        build_corpus(config(deb_dir, doc_bytes=512), tmp_path / "a", progress=False)


def test_the_cap_keeps_a_seeded_choice_of_files(deb_dir, tmp_path):
    cfg = config(deb_dir, packages=("fake-doc",), max_docs_per_package=10)
    corpus = load_corpus(build_corpus(cfg, tmp_path / "capped", progress=False))
    assert len(corpus.pool) + len(corpus.test) == 10


def test_an_interrupted_build_resumes_at_the_unfinished_package(deb_dir, tmp_path, monkeypatch):
    bad = tmp_path / "debs"
    shutil.copytree(deb_dir, bad)
    deb = bad / "fake-dict_1.0-1_all.deb"
    deb.write_bytes(deb.read_bytes()[:300])  # truncated
    out = tmp_path / "corpus"
    with pytest.raises(
        CorpusError, match=r"fake-dict .* does not unpack(.|\n)*replace .*fake-dict"
    ):
        build_corpus(config(bad), out, progress=False)
    assert (out / "packages/fake-doc.jsonl").is_file() and not (out / "corpus.json").exists()
    stamp = (out / "packages/fake-doc.jsonl").stat().st_mtime_ns
    shutil.copy(deb_dir / deb.name, deb)
    unpacked = []
    real_documents = corpus_mod._documents
    monkeypatch.setattr(corpus_mod, "_documents", lambda cfg, pkg, *a: unpacked.append(pkg)
                        or real_documents(cfg, pkg, *a))  # fmt: skip
    build_corpus(config(bad), out, progress=False)
    assert unpacked == ["fake-dict"]  # fake-doc was finished: not unpacked again
    assert (out / "packages/fake-doc.jsonl").stat().st_mtime_ns == stamp
    assert load_corpus(out).pool == load_corpus(build_corpus(config(deb_dir), tmp_path / "b",
                                                             progress=False)).pool  # fmt: skip


def test_a_corrupt_download_is_removed_so_the_next_run_fetches_it_again(deb_dir, tmp_path):
    out = tmp_path / "corpus"
    cached = out / "debs/fake-doc_1.0-1_all.deb"
    cached.parent.mkdir(parents=True)
    cached.write_bytes((deb_dir / cached.name).read_bytes()[:500])
    cfg = CorpusConfig(packages=("fake-doc",))
    with pytest.raises(CorpusError, match="removed the cached copy"):
        build_corpus(cfg, out, progress=False)
    assert not cached.exists()


def test_bad_packages_are_named_with_the_fix(deb_dir, tmp_path, monkeypatch):
    with pytest.raises(CorpusError, match=r"no .deb files for package nope(.|\n)*fake-dict_1.0-1"):
        build_corpus(config(deb_dir, packages=("nope",)), tmp_path / "a", progress=False)
    make_deb(tmp_path, "only-html", {"usr/share/doc/x/index.html": text(50, "h")})
    with pytest.raises(CorpusError, match="only-html yields no documents"):
        build_corpus(config(tmp_path, packages=("only-html",)), tmp_path / "b", progress=False)
    assert not list((tmp_path / "b").glob(".tmp-*"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="needs Debian's dpkg-deb"):
        build_corpus(config(deb_dir), tmp_path / "c", progress=False)
    with pytest.raises(FileNotFoundError, match="tttlab lm corpus --out"):
        load_corpus(tmp_path / "c")
    with pytest.raises(ValueError, match="lower min_doc_bytes"):
        CorpusConfig(doc_bytes=128, min_doc_bytes=256)


def test_long_lines_are_cut_between_characters():
    docs = cut_documents("ü" * 1000 + "\nend\n", doc_bytes=300, min_doc_bytes=10)
    assert "".join(docs) == "ü" * 1000 + "\nend\n"
    assert all(len(d.encode()) <= 2 * 300 + 4 for d in docs)


@needs_dpkg
def test_cli_builds_and_summarises(deb_dir, tmp_path, capsys):
    argv = f"lm corpus --out {tmp_path}/c --deb-dir {deb_dir} --packages fake-doc fake-dict "
    assert main((argv + "--test-fraction 0.3 --no-progress").split()) == 0
    said = capsys.readouterr().out
    assert "pool documents" in said and "fake-doc 1.0-1:" in said
    assert main((argv + "--doc-bytes 512 --no-progress").split()) == 2
    assert "other settings" in capsys.readouterr().err
    assert json.loads((tmp_path / "c/corpus.json").read_text())["config"]["doc_bytes"] == 1024


def test_a_real_package_through_apt(tmp_path):
    """fortunes-min (56 KB) through `apt-get download`: runs wherever apt can reach a mirror."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("needs Debian's apt-get and dpkg-deb")
    cfg = CorpusConfig(packages=("fortunes-min",))
    try:
        corpus = load_corpus(build_corpus(cfg, tmp_path / "c", progress=False))
    except CorpusError as err:
        if any(s in str(err) for s in ("resolv", "Failed to fetch", "Unable to locate",
                                       "connect", "Network")):  # fmt: skip
            pytest.skip(f"apt has no network or no package lists here: {err}")
        raise
    (record,) = corpus.record["packages"]
    assert record["version"].startswith("1:") and len(record["deb_sha256"]) == 64
    assert len(corpus.pool) > 20 and list((tmp_path / "c/debs").glob("fortunes-min_*.deb"))


def test_a_package_apt_does_not_know_is_named_with_the_fix(tmp_path):
    if shutil.which("apt-get") is None:
        pytest.skip("needs Debian's apt-get")
    cfg = CorpusConfig(packages=("no-such-package-tttlab",))
    with pytest.raises(CorpusError, match=r"(?s)no-such-package-tttlab.*apt-cache policy"):
        build_corpus(cfg, tmp_path / "c", progress=False)
    assert not list((tmp_path / "c/debs").iterdir())  # the download's temp folder is gone


def test_a_corpus_keeps_its_key():
    """Cached tokenizers and models are keyed by it: the record and the documents' digests."""
    record = {
        "settings": {"doc_bytes": 2048, "seed": 0},
        "packages": ["python3-six"],
        "pool_docs": 3,
        "test_docs": 1,
    }
    digests = {"pool": "a" * 64, "test": "b" * 64}
    assert Corpus([], [], record, digests=digests).key == "cdb39bf2f09e96f0"
    assert Corpus([], [], record, digests=digests | {"pool": "c" * 64}).key != "cdb39bf2f09e96f0"


def test_replacing_the_documents_changes_the_key(deb_dir, tmp_path):
    """Models and tokenizers are cached by the key: texts replaced in place are another corpus."""
    out = build_corpus(config(deb_dir), tmp_path / "c", progress=False)
    before = load_corpus(out).key
    rows = [json.loads(line) for line in (out / "pool.jsonl").read_text().splitlines()]
    replaced = [row | {"text": row["text"].upper()} for row in rows]
    (out / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in replaced))
    assert load_corpus(out).key != before


def test_a_damaged_document_row_names_the_file_and_line(deb_dir, tmp_path):
    out = build_corpus(config(deb_dir), tmp_path / "c", progress=False)
    lines = (out / "test.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    del row["text"]
    (out / "test.jsonl").write_text("\n".join([lines[1], json.dumps(row), *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match=r"test\.jsonl, line 2: field 'text' is missing"):
        load_corpus(out)


def test_the_leak_guard_removes_a_planted_near_copy_of_a_test_document(deb_dir, tmp_path):
    clean = load_corpus(build_corpus(config(deb_dir), tmp_path / "clean", progress=False))
    assert clean.record["leak_guard"]["removed"] == 0 and clean.removed == []
    target = clean.test[0]
    words = target.text.split(" ")
    copy = " ".join(w + "s" if i % 25 == 0 else w for i, w in enumerate(words))  # light edit
    cfg = config(deb_dir, packages=("fake-doc", "fake-dict", "fake-mirror"))
    name = next(
        f"usr/share/doc/m/copy{i}.txt"
        for i in range(100)
        if not corpus_mod._is_test(cfg, "fake-mirror", f"usr/share/doc/m/copy{i}.txt")
    )
    debs = tmp_path / "debs"
    shutil.copytree(deb_dir, debs)
    make_deb(debs, "fake-mirror", {name: copy})  # lands in the pool by its file's coin
    out = build_corpus(config(debs, packages=cfg.packages), tmp_path / "leaky", progress=False)
    corpus = load_corpus(out)
    guard = corpus.record["leak_guard"]
    assert guard["removed"] == 1 and guard["removed_by_package"] == {"fake-mirror": 1}
    (pair,) = guard["pairs"]
    assert pair[:2] == [f"fake-mirror/{name}#0", target.id] and 0.5 <= pair[2] < 1
    assert [d.text for d in corpus.removed] == [copy]
    assert all(d.package != "fake-mirror" for d in corpus.pool)
    assert corpus.record["totals"]["docs_pool"] == len(corpus.pool) == len(clean.pool)
    assert [d.id for d in corpus.test] == [d.id for d in clean.test]
