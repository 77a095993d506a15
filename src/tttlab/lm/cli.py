"""`tttlab lm corpus` once its flags have parsed (`tttlab.cli`)."""

from __future__ import annotations

from typing import Any

from tttlab.lm.corpus import build_corpus, load_corpus


def corpus(parsed: dict[str, Any]) -> int:
    """`tttlab lm corpus`: build (or resume, or reuse) a corpus folder and summarise it."""
    output = parsed["output"]
    folder = build_corpus(parsed["corpus"], output.out, progress=output.progress)
    record = load_corpus(folder).record
    t = record["totals"]
    parts = [
        f"{p['name']} {p['version']}: {p['docs_pool']} pool / {p['docs_test']} test docs"
        for p in record["packages"]
    ]
    print(
        f"corpus {folder}: {t['docs_pool']} pool documents ({t['bytes_pool'] / 1e6:.1f} MB) and "
        f"{t['docs_test']} test documents ({t['bytes_test'] / 1e6:.2f} MB) from "
        f"{t['files_read']} files; " + "; ".join(parts) + "."
    )
    return 0
