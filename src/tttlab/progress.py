"""Phase lines: one line on stderr, above any progress bar, when a long step of work begins, so a
command that runs for minutes always says what it is doing."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def phase(text: str, show: bool = True) -> None:
    """Print `tttlab: <text>` on stderr above any progress bar (nothing when `show` is False)."""
    if show:
        tqdm.write(f"tttlab: {text}", file=sys.stderr)
