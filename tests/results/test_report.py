"""A study's Markdown report and its rows as CSV."""

import csv

import pytest

from tttlab.results import (
    Estimate,
    markdown_table,
    mean_over_seeds,
    paper_references,
    plot_study,
    write_report,
    write_rows_csv,
)

from .test_plots import model_size_rows


def test_report_holds_table_plot_settings_and_references(tmp_path):
    rows = model_size_rows()
    plot = plot_study(
        rows, "width", ["global", "ttt"], tmp_path / "plots" / "size.png", x_label="d", dpi=40
    )
    path = write_report(
        tmp_path / "README.md",
        title="Model size",
        summary="TTT's gain shrinks as the CNN grows.",
        table_rows=mean_over_seeds(rows, "width", ["global", "ttt"]),
        columns=["width", "n_seeds", "acc_global", "acc_ttt", "gain"],
        plot=plot,
        settings={"widths": [25, 50], "seeds": 2},
        references=paper_references("mnist"),
    )
    text = path.read_text()
    assert text.startswith("# Model size\n\nTTT's gain shrinks as the CNN grows.\n")
    header = "| width | n_seeds | global accuracy [CI] | ttt accuracy [CI] | gain, points [CI] |"
    assert header in text
    assert "| ---: | ---: | ---: | ---: | ---: |" in text
    assert text.count("\n| 1152 | 2 | ") == 1 and text.count("\n| 25 | 2 | ") == 1
    assert "![Model size](plots/size.png)" in text
    assert '```json\n{\n  "seeds": 2,' in text
    assert "| global model on the test set (mnist) | 98.57% ± 0.12 |" in text
    assert "Source: Results reported in arXiv 2509.24510" in text


def test_markdown_cells_match_format_table():
    row = {"d": 25, "acc_ttt": 0.81951, "ci_low_ttt": 0.81193, "ci_high_ttt": 0.82668,
           "gain": 0.0106, "gain_low": 0.0081, "gain_high": 0.0131, "note": "a|b",
           "est": Estimate(0.5, 0.4, 0.6), "seconds": 12345.6}  # fmt: skip
    lines = markdown_table([row], ["d", "acc_ttt", "gain", "note", "est", "seconds"]).splitlines()
    assert lines == [
        "| d | ttt accuracy [CI] | gain, points [CI] | note | est | seconds |",
        "| ---: | ---: | ---: | --- | --- | ---: |",
        "| 25 | 81.95% [81.19, 82.67] | +1.06 [+0.81, +1.31] | a\\|b | 50.00% [40.00, 60.00] "
        "| 12346 |",
    ]


def test_accuracy_cells_carry_the_binomial_standard_error_where_rows_have_it():
    row = {"acc_ttt": 0.9901, "ci_low_ttt": 0.9881, "ci_high_ttt": 0.9920, "se_ttt": 0.000995}
    lines = markdown_table([row], ["acc_ttt"]).splitlines()
    assert lines[0] == "| ttt accuracy ± s.e. [CI] |"  # the paper's 99.01 ± 0.10
    assert lines[2] == "| 99.01% ± 0.10 [98.81, 99.20] |"


def test_bad_report_input_is_named(tmp_path):
    rows = model_size_rows()
    ok = {"title": "t", "summary": "s", "table_rows": rows, "columns": ["width"]}
    with pytest.raises(ValueError, match="table_rows is empty"):
        write_report(tmp_path / "r.md", **ok | {"table_rows": []})
    with pytest.raises(ValueError, match="column 'widht' is in no row \\(did you mean 'width'"):
        write_report(tmp_path / "r.md", **ok | {"columns": ["widht"]})
    with pytest.raises(FileNotFoundError, match="write it first"):
        write_report(tmp_path / "r.md", **ok | {"plot": tmp_path / "missing.png"})
    with pytest.raises(ValueError, match="one non-empty line"):
        write_report(tmp_path / "r.md", **ok | {"title": "a\nb"})
    assert list(tmp_path.iterdir()) == []


def test_rows_csv_keeps_every_column_in_first_seen_order(tmp_path):
    rows = [{"width": 25, "acc_ttt": 0.123456789012345}, {"width": 50, "seed": 1, "note": None}]
    path = write_rows_csv(tmp_path / "rows.csv", rows)
    with path.open(newline="") as f:
        read = list(csv.reader(f))
    assert read == [
        ["width", "acc_ttt", "seed", "note"],
        ["25", "0.123456789012345", "", ""],
        ["50", "", "1", ""],
    ]
    with pytest.raises(ValueError, match="rows is empty"):
        write_rows_csv(tmp_path / "none.csv", [])
