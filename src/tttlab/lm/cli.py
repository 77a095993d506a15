"""`tttlab lm ...`: the language task's commands; flags generated from the config dataclasses.

tttlab lm corpus --out corpus                              # the default Debian documentation mix
tttlab lm corpus --out small --packages fortunes manpages --max-docs-per-package 500
"""

from __future__ import annotations

from collections.abc import Callable


def corpus_main(argv: list[str]) -> int:
    """`tttlab lm corpus`: build (or resume, or reuse) a corpus folder and summarise it."""
    from tttlab.cli import flag_parser  # tttlab.cli imports this module only when asked
    from tttlab.lm.corpus import CorpusConfig, build_corpus, load_corpus

    parser = flag_parser("tttlab lm corpus", COMMANDS["corpus"][0])
    parser.add_argument("--out", required=True, metavar="FOLDER", help="the corpus folder")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_arguments(CorpusConfig, dest="cfg")
    args = parser.parse_args(argv)
    folder = build_corpus(args.cfg, args.out, progress=not args.no_progress)
    print(corpus_summary(load_corpus(folder).record, folder))
    return 0


def corpus_summary(record: dict, folder: object) -> str:
    """One paragraph: documents and bytes in pool and test, then each package's share."""
    t = record["totals"]
    parts = [
        f"{p['name']} {p['version']}: {p['docs_pool']} pool / {p['docs_test']} test docs"
        for p in record["packages"]
    ]
    return (
        f"corpus {folder}: {t['docs_pool']} pool documents ({t['bytes_pool'] / 1e6:.1f} MB) and "
        f"{t['docs_test']} test documents ({t['bytes_test'] / 1e6:.2f} MB) from "
        f"{t['files_read']} files; " + "; ".join(parts) + "."
    )


COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "corpus": (
        "Debian documentation packages -> a Pile-like corpus of ~1 KB documents, test held out "
        "by source file",
        corpus_main,
    ),
}


def main(argv: list[str]) -> int:
    """`tttlab lm {corpus,...} ...`."""
    if not argv or argv[0] not in COMMANDS:
        lines = "\n".join(f"  {name:<8} {text}" for name, (text, _) in COMMANDS.items())
        print(f"usage: tttlab lm {{{','.join(COMMANDS)}}} ...\n\n{lines}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]][1](argv[1:])
