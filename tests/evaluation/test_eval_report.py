"""The eval report says what its numbers are: headers name the region of the background metrics (whole image for
sets without masks), plotted values are on the scale their titles name, the oracle's joint rate is plotted with
its interval, a correlation over a constant column is "n/a (...)", the examples sheet's rows align whatever the
labels' length."""

import numpy as np
import pytest
from PIL import Image

from freeprompt.evaluation import eval_report as er


def rows(n=6):
    out = []
    for m, base in (("fpe", 0.001), ("plain", 0.002)):
        for i in range(n):
            out.append({"method": m, "mse_outside": str(base + i * 1e-5), "psnr_outside": str(30 + i * 0.1),
                        "clip_directional": str(0.9 + i * 0.01), "joint": "True" if m == "fpe" or i % 2 else "False",
                        "attribute_ok": "True", "iou": "0.9"})
    return out


def test_a_constant_verdict_prints_why_there_is_no_correlation():
    table = er.oracle_table(rows())
    assert "n/a (all edits succeeded)" in table and "nan" not in table
    assert er.correlation_text(np.array([1.0, 2, 3]), np.zeros(3)) == "n/a (no edit succeeded)"
    assert er.correlation_text(np.array([1.0, 2]), np.array([0.0, 1])) == "n/a (2 edits)"
    assert er.correlation_text(np.ones(4), np.array([0.0, 1, 0, 1])) == "n/a (CDS constant)"
    assert er.correlation_text(np.array([1.0, 2, 3, 4]), np.array([0.0, 0, 1, 1])) == "0.89"


def test_headers_name_where_the_background_metrics_were_taken():
    assert "PSNR (dB), whole image" in er.pie_table(rows(), "whole")
    assert "MSE x10^4, outside the object" in er.pie_table(rows(), "object")
    assert "outside the edit mask" in er.pie_table(rows(), "mask")
    assert any("whole image" in line for line in er.setup_lines("clean", "whole", "at the model's size"))


def test_plotted_values_are_on_the_titles_scale_and_the_joint_rate_is_plotted():
    columns = {c: (title, scale) for c, title, scale in er.plot_columns(rows(), "whole")}
    assert columns["mse_outside"] == ("MSE x10^4\nwhole image", 1e4) and "joint" in columns
    (fpe, low, high), _ = er.panel_stats(rows(), "mse_outside", ["fpe", "plain"], 1e4)
    assert fpe == pytest.approx(10.25) and low < fpe < high  # 0.001025 x 10^4
    (rate, low, high), (half, *_) = er.panel_stats(rows(), "joint", ["fpe", "plain"], 100)
    assert rate == 100 and 50 < low < 100 and high == pytest.approx(100) and half == 50
    assert er.rate_interval(0, 10)[1] == 0.0


def test_the_metrics_plot_is_drawn(tmp_path):
    assert er.bars(rows(), tmp_path / "metrics.png", "whole", "title")
    assert Image.open(tmp_path / "metrics.png").size[0] > 400


def test_the_examples_sheet_aligns_rows_of_any_height(tmp_path):
    files = []
    for i, (w, h, colour) in enumerate(((120, 80, "red"), (100, 140, "blue"), (120, 60, "green"))):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (w, h), colour).save(path)
        files.append(path)
    assert er.example_sheet(files, tmp_path / "sheet.png", per_line=2)
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.size == (220, 200)  # columns 120 + 100 wide, lines 140 + 60 tall
    assert sheet.getpixel((0, 0)) == (255, 0, 0) and sheet.getpixel((120, 139)) == (0, 0, 255)
    assert sheet.getpixel((0, 140)) == (0, 128, 0) and sheet.getpixel((0, 100)) == (255, 255, 255)
    assert not er.example_sheet([], tmp_path / "none.png")
