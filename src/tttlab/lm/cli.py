"""`tttlab lm corpus` once its flags have parsed (`tttlab.cli`)."""

from __future__ import annotations

from typing import Any

from tttlab.atomic import Interrupted
from tttlab.lm.corpus import build_corpus, load_corpus


def corpus(parsed: dict[str, Any]) -> int:
    """`tttlab lm corpus`: build (or resume, or reuse) a corpus folder and summarise it."""
    output = parsed["output"]
    try:
        folder = build_corpus(parsed["corpus"], output.out, progress=output.progress)
    except KeyboardInterrupt as err:
        raise Interrupted(
            f"interrupted; {output.out} keeps each package finished so far (the package in "
            "flight is lost): the same command continues with the others"
        ) from err
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
