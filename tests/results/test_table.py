"""Text tables for the terminal."""

from tttlab.results import Estimate, format_accuracy, format_table


def test_format_accuracy():
    assert format_accuracy(Estimate(0.81234, 0.80451, 0.82007)) == "81.23% [80.45, 82.01]"


def test_table_aligns_text_left_and_numbers_right():
    rows = [
        {"method": "global", "acc": 0.812345, "n": 10000},
        {"method": "ttt", "acc": 0.85, "n": 10000, "seconds": 12345.6},
        {"method": "majority", "acc": "79.10% [78.2, 80.0]"},  # preformatted by the caller
    ]
    assert format_table(rows).splitlines() == [
        "method    acc                      n  seconds",
        "--------  -------------------  -----  -------",
        "global    0.8123               10000",
        "ttt       0.85                 10000    12346",
        "majority  79.10% [78.2, 80.0]",
    ]


def test_table_columns_pick_and_order():
    rows = [{"a": 1, "b": 2.5, "c": "x"}]
    lines = format_table(rows, columns=["c", "b"]).splitlines()
    assert lines == ["c    b", "-  ---", "x  2.5"]
    assert format_table([]) == ""
