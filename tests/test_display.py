"""The display policy: digits written out by hand, and the same text for floats that differ in their last bits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.display import configure_display, fmt, fmt_ci, fmt_interval, fmt_pct, format_columns
from helpers.statistics import ConfidenceInterval


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (48.843, "48.8"),
        (142.6, "143"),
        (302378.114, "3.02e+05"),
        (7262512.028, "7.26e+06"),
        (1121.64, "1,120"),
        (0.0214, "0.0214"),
        (0.94, "0.940"),
        (9.996, "10.0"),  # rounding adds a digit before the point: one decimal fewer
        (99999.7, "1.00e+05"),  # rounds out of the fixed range
        (0.00099996, "0.00100"),
        (0.0, "0"),
        (float("nan"), "nan"),
        (np.float32(0.5), "0.500"),
        (7, "7"),
        (np.int64(1962), "1,962"),
    ],
)
def test_significant_digits(value, expected):
    assert fmt(value) == expected


@pytest.mark.parametrize(
    ("value", "style", "expected"),
    [
        (0.93333, {"decimals": 3}, "0.933"),
        (-0.0004, {"decimals": 3}, "0.000"),  # no "-0.000": a tiny negative value is zero at this precision
        (-0.0004, {"decimals": 3, "sign": True}, "+0.000"),
        (0.0667, {"decimals": 3, "sign": True}, "+0.067"),
        (-47.12, {"sign": True}, "-47.1"),
        (1234.5, {"digits": 2}, "1,200"),
    ],
)
def test_styles(value, style, expected):
    assert fmt(value, **style) == expected


@pytest.mark.parametrize("value", [48.8431, 0.91342, 302378.114, 1.18751, 0.0234567])
def test_last_bit_changes_do_not_change_the_text(value):
    # Another CPU's float32 rounding moves a value by ~1e-6 relative; away from a rounding boundary the text holds.
    for relative in (1e-6, -1e-6, 1e-5, -1e-5):
        assert fmt(value * (1 + relative)) == fmt(value)


def test_intervals_and_percentages():
    assert fmt_ci(ConfidenceInterval(48.843, 39.14, 60.728)) == "48.8 [39.1, 60.7]"
    assert fmt_ci((0.94, 0.89, 0.98), decimals=2) == "0.94 [0.89, 0.98]"
    assert fmt_interval(-0.1403, -0.0267, decimals=3, sign=True) == "[-0.140, -0.027]"
    assert fmt_pct(0.9333) == "93.3%"
    assert fmt_pct(-0.14, decimals=0, sign=True) == "-14%"


@pytest.mark.parametrize("bad", ["48.8", None, True, [1.0]])
def test_non_numbers_are_refused(bad):
    with pytest.raises(TypeError, match="real number"):
        fmt(bad)


@pytest.mark.parametrize(
    "style, error, message",
    [
        ({"digits": 0}, ValueError, "digits must be at least 1; got 0"),
        ({"decimals": -1}, ValueError, "decimals must be at least 0; got -1"),
        ({"decimals": 1.5}, TypeError, r"decimals must be an integer; got 1.5 \(float\)"),
        ({"digits": "3"}, TypeError, r"digits must be an integer; got '3' \(str\)"),
    ],
)
def test_bad_precision_is_refused(style, error, message):
    with pytest.raises(error, match=message):
        fmt(1.0, **style)


def test_tables_use_the_policy_in_text_and_html():
    frame = pd.DataFrame({"ppl": [48.843, 302378.114], "acc": [0.94, 0.8133]}, index=["full", "first"])
    with pd.option_context("display.float_format", None):
        configure_display()
        text, html = frame.to_string(), frame.to_html()
    pd.reset_option("display.float_format")
    assert "48.8" in text and "3.02e+05" in text and "0.813" in text and "302378" not in text
    assert "<td>3.02e+05</td>" in html


def test_format_columns_formats_only_the_named_columns_and_copies():
    frame = pd.DataFrame({"acc": [0.94, 0.8133], "name": ["a", "b"], "ppl": [48.843, 110.2]})
    shown = format_columns(frame, {"acc": {"decimals": 2}})
    assert shown["acc"].tolist() == ["0.94", "0.81"]
    assert shown["ppl"].tolist() == [48.843, 110.2] and frame["acc"].tolist() == [0.94, 0.8133]
    with pytest.raises(KeyError, match="no such column"):
        format_columns(frame, {"accuracy": {"decimals": 2}})
