"""The README and docs/ as a newcomer uses them: every link resolves, the Python example runs as
written, and every command line they show parses with today's flags."""

import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tttlab.cli import parse

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PLACEHOLDER = re.compile(r"\.\.\.|<|COMMAND|--config")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to '-'."""
    heads = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link {target!r} points at nothing"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page.name}: no heading #{anchor} in {file.name}"


def readme_block(language: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)[0]


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    X, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "features.npz", embeddings=(X / 16).astype(np.float32), labels=y)
    monkeypatch.chdir(tmp_path)  # the example reads features.npz and writes runs/ here
    exec(compile(readme_block("python"), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"global \d+\.\d\d%, TTT \d+\.\d\d%", out)
    assert "ttt - global:" in out and list(tmp_path.glob("runs/ttt-*/report.md"))


def recipes() -> list[str]:
    """The command column of the README's five-minute table."""
    table = (ROOT / "README.md").read_text(encoding="utf-8").split("## Try each task")[1]
    rows = [line.split(" | ") for line in table.split("\n## ")[0].splitlines()]
    return [r[1].strip("`") for r in rows if len(r) > 2 and r[1].startswith("`")]


def command_lines() -> list[tuple[str, str]]:
    """(page, command) for each `tttlab ...` line of the docs' bash blocks and the README's
    recipes, except those with placeholders (`...`, `<key>`, COMMAND) or that read a file when
    parsed (--config)."""
    found = [("README.md", r) for r in recipes() if r.startswith("tttlab ")]
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = " ".join(line.split("#")[0].split())
                if command.startswith("tttlab ") and not re.search(
                    r"\.\.\.|<|COMMAND|--config", command
                ):
                    found.append((page.name, command))
    return sorted(set(found))


@pytest.mark.parametrize("page, command", command_lines())
def test_every_command_line_shown_parses(page, command):
    words = shlex.split(command)[1:]
    if words[-1:] in (["--help"], ["-h"]):
        words = words[:-1]
    if words:
        parse(words)  # raises FlagError naming a flag that no longer exists


def test_the_five_minute_recipes_run_and_parse():
    assert len(recipes()) >= 10
    for recipe in recipes():
        if recipe.startswith("python "):
            assert (ROOT / recipe.split()[1]).is_file(), recipe
        else:
            assert ("README.md", recipe) in command_lines()


def test_the_examples_folder_is_what_the_docs_say():
    assert {p.name for p in (ROOT / "examples").glob("*.py")} >= {
        "ttt_on_your_features.py",
        "plot_units.py",
        "new_method.py",
    }
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
