"""Session-wide hooks: the fuzz tests' counts per reader, printed after the test summary."""

import sys


def pytest_terminal_summary(terminalreporter):
    fuzz = next((m for name, m in sys.modules.items() if name.endswith("test_fuzz_readers")), None)
    counts = getattr(fuzz, "COUNTS", None)
    if not counts:
        return
    terminalreporter.section("files tried per reader (corrupted at random and by structure)")
    for reader, c in counts.items():
        other = c["tried"] - c["read"] - c["refused"]
        terminalreporter.write_line(
            f"{reader:<26} {c['tried']:>5} tried: {c['refused']:>5} refused with a tttlab error "
            f"naming the file, {c['read']:>5} still readable, {other} other outcomes"
        )
