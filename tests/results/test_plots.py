"""Study plots: a synthetic model-size study (8 widths, 2 seeds) drawn as a PNG, bad rows named."""

import numpy as np
import pytest

from tttlab.results import (
    check_rows,
    compact_number,
    figure,
    mean_over_seeds,
    method_color,
    paper_references,
    plot_study,
    save_figure,
    study_row,
)

WIDTHS = [25, 50, 80, 128, 192, 320, 512, 1152]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def model_size_rows(seeds: int = 2) -> list[dict]:
    """Rows as a model-size study writes them: TTT's gain shrinks as the width grows."""
    rng = np.random.default_rng(0)
    rows = []
    for w in WIDTHS:
        for seed in range(seeds):
            g = 0.99 - 0.08 * (25 / w) ** 0.7 + rng.normal(0, 0.002)
            t = g + 0.03 * (25 / w) ** 0.6
            row = {"width": w, "parameters": 40 * w * w, "seed": seed}
            for m, a in (("global", g), ("ttt", t)):
                row |= {f"acc_{m}": a, f"ci_low_{m}": a - 0.003, f"ci_high_{m}": a + 0.003}
            row |= {"gain": t - g, "gain_low": t - g - 0.002, "gain_high": t - g + 0.002}
            rows.append(row)
    return rows


def test_plot_study_writes_a_png(tmp_path):
    path = plot_study(
        model_size_rows(),
        "parameters",
        ["global", "ttt"],
        tmp_path / "plots" / "model-size.png",
        x_label="parameters",
        title="MNIST CNNs",
        reference=paper_references("mnist"),
        dpi=40,
    )
    assert path == tmp_path / "plots" / "model-size.png"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000
    assert [p.name for p in path.parent.iterdir()] == ["model-size.png"]  # no temp file left


def test_error_metric_linear_axis_and_rows_without_gain(tmp_path):
    rows = [{k: v for k, v in r.items() if not k.startswith("gain")} for r in model_size_rows(1)]
    rows[0]["width"] = 0  # fine on a linear axis
    path = plot_study(
        rows, "width", ["global", "ttt"], tmp_path / "e.png", x_label="d", log_x=False,
        metric="error", dpi=40,
    )  # fmt: skip
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_mean_over_seeds_averages_and_spans_the_seeds_cis():
    rows = [
        {"d": 50, "acc_ttt": 0.90, "ci_low_ttt": 0.88, "ci_high_ttt": 0.91},
        {"d": 25, "acc_ttt": 0.80, "ci_low_ttt": 0.78, "ci_high_ttt": 0.82},
        {"d": 50, "acc_ttt": 0.94, "ci_low_ttt": 0.93, "ci_high_ttt": 0.96},
    ]
    assert mean_over_seeds(rows, "d", ["ttt"]) == [
        {"d": 25, "n_seeds": 1, "acc_ttt": 0.80, "ci_low_ttt": 0.78, "ci_high_ttt": 0.82},
        {"d": 50, "n_seeds": 2, "acc_ttt": pytest.approx(0.92), "ci_low_ttt": 0.88,
         "ci_high_ttt": 0.96},
    ]  # fmt: skip


def test_study_row_from_pipeline_metrics():
    metrics = {
        "methods": {
            "global": {"accuracy": 0.9, "ci_low": 0.89, "ci_high": 0.91, "n": 100},
            "ttt": {"accuracy": 0.92, "ci_low": 0.91, "ci_high": 0.93, "n": 100},
        },
        "gain_over_global": {"ttt": {"mean": 0.02, "low": 0.01, "high": 0.03}},
        "parameters": 1234,
        "feature_width": 25,
        "n_test": 100,
    }
    row = study_row({"width": 25, "seed": 0}, metrics)
    assert row == {
        "width": 25, "seed": 0, "parameters": 1234, "feature_width": 25, "n_test": 100,
        "acc_global": 0.9, "ci_low_global": 0.89, "ci_high_global": 0.91,
        "se_global": pytest.approx(0.03),  # sqrt(0.9 * 0.1 / 100): older metrics have no se
        "acc_ttt": 0.92, "ci_low_ttt": 0.91, "ci_high_ttt": 0.93,
        "se_ttt": pytest.approx(0.02713, abs=1e-5),
        "gain": 0.02, "gain_low": 0.01, "gain_high": 0.03,
    }  # fmt: skip
    assert check_rows([row], "parameters", ["global", "ttt"], log_x=True)
    with pytest.raises(ValueError, match="no gain over global for 'majority'"):
        study_row({}, metrics, gain_of="majority")


def test_colours_are_fixed_per_method_name():
    assert method_color("ttt") == "tab:red" and method_color("global") == "tab:blue"
    assert method_color("my-method") == method_color("my-method")


def test_compact_tick_labels():
    assert [compact_number(v) for v in (25, 1152, 12345, 3.4e6, 7e9)] == [
        "25", "1152", "12.3k", "3.4M", "7B",
    ]  # fmt: skip


def test_paper_references_are_fractions_with_their_source():
    glob, ttt = paper_references("mnist")
    assert glob.method == "global" and glob.label == "global model on the test set (mnist)"
    assert (glob.accuracy, glob.pm) == pytest.approx((0.9857, 0.0012))
    assert ttt.accuracy == pytest.approx(0.9901) and "2509.24510" in ttt.source
    with pytest.raises(ValueError, match="reference dataset='cifar'"):
        paper_references("cifar")


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        (lambda rows: rows.clear(), {}, "rows is empty"),
        (lambda rows: rows[3].pop("ci_high_ttt"), {}, "row 3 has no column 'ci_high_ttt'"),
        (lambda rows: rows[0].pop("parameters"), {}, "row 0 has no x column 'parameters'"),
        (lambda rows: rows[2].update(parameters=0), {}, "row 2: parameters = 0 cannot sit on"),
        (lambda rows: rows[1].update(acc_ttt=97.5), {}, "looks like a percentage; divide by 100"),
        (lambda rows: rows[1].update(acc_ttt=0.5), {}, "ci_low_ttt <= acc_ttt <= ci_high_ttt"),
        (lambda rows: rows[4].pop("gain_low"), {}, "row 4 has .* but not all of gain"),
        (lambda rows: None, {"gain_of": ("ttt", "majority")}, "not in methods"),
        (lambda rows: None, {"methods": ["global", "global"]}, "name a method twice"),
        (lambda rows: None, {"metric": "loss"}, "metric='loss' is not supported"),
        (lambda rows: None, {"path_name": "plot.pdf"}, "must end in .png"),
    ],
)
def test_bad_input_is_named(tmp_path, change, kwargs, message):
    rows = model_size_rows()
    change(rows)
    path = tmp_path / kwargs.pop("path_name", "p.png")
    kwargs = {"methods": ["global", "ttt"]} | kwargs
    with pytest.raises(ValueError, match=message):
        plot_study(rows, "parameters", path=path, x_label="parameters", dpi=40, **kwargs)
    assert not path.exists()


def test_a_gain_of_another_pair_is_caught(tmp_path):
    rows = model_size_rows()
    for r in rows:
        r |= {"acc_majority": 0.5, "ci_low_majority": 0.4, "ci_high_majority": 0.6}
    with pytest.raises(ValueError, match="not acc_ttt - acc_majority"):
        plot_study(
            rows, "parameters", ["global", "ttt", "majority"], tmp_path / "p.png",
            x_label="parameters", gain_of=("ttt", "majority"),
        )  # fmt: skip


def test_figure_and_save_figure_write_any_plot_atomically(tmp_path):
    fig = figure((4, 3))
    ax = fig.add_subplot()
    ax.plot([1, 2, 3], [0.5, 0.7, 0.9])
    assert type(fig.canvas).__name__ == "FigureCanvasAgg"  # no pyplot window, no global figure
    path = save_figure(fig, tmp_path / "curves" / "acc.png", dpi=40)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert save_figure(fig, tmp_path / "curves" / "acc.svg").read_text().count("<svg") == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["acc.png", "acc.svg"]


def test_save_figure_names_a_bad_suffix_and_leaves_nothing_when_cut_off(tmp_path):
    fig = figure()
    with pytest.raises(ValueError, match=r"suffix '.txt'; name it \*.png"):
        save_figure(fig, tmp_path / "plot.txt")

    def crash(*args, **kwargs):
        open(args[0], "wb").write(b"\x89PNG half")
        raise KeyboardInterrupt

    fig.savefig = crash
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, tmp_path / "plot.png")
    assert list(tmp_path.iterdir()) == []
