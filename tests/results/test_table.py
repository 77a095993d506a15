"""Text tables for the terminal."""

import numpy as np

from tttlab.results import Estimate, csv_cell, csv_text, format_accuracy, format_table, is_number


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


def test_csv_cells_keep_every_digit_and_quote_what_needs_it():
    assert [csv_cell(v) for v in (None, 0.1 + 0.2, np.float32(0.5), 7, "a")] == [
        "",
        "0.30000000000000004",
        "0.5",
        "7",
        "a",
    ]
    assert csv_text([["name", "acc"], ["a, b", "0.5"]]) == 'name,acc\n"a, b",0.5\n'


def test_is_number_leaves_out_bools_and_text():
    assert is_number(3) and is_number(np.float64(0.5)) and is_number(np.int64(2))
    assert not is_number(True) and not is_number("3") and not is_number(None)
