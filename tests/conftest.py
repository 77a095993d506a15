"""Session-wide hooks: Ctrl-C restored where a background shell ignores it, and the fuzz
tests' counts per reader, printed after the test summary."""

import signal
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


def pytest_configure(config):
    """Ctrl-C as a terminal sends it, even where the suite runs from a background shell (`cmd &`,
    nohup), which starts it with SIGINT ignored: the interrupt tests send themselves SIGINT."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
