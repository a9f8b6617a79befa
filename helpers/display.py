"""How the course shows numbers: as many digits as the evidence supports, and the same digits on every CPU.

A float32 forward pass rounds differently on different processors (AVX-512 vs AVX2 kernels, other BLAS builds), so
a perplexity or a cosine changes in about its fifth significant digit from machine to machine. Bootstrap intervals
over a few dozen windows are wider than 1% anyway. Every number a notebook prints therefore goes through one of
these functions, and every pandas table through ``configure_display``: 3 significant digits by default (``48.8``,
``143``, ``3.02e+05``), fixed decimals where a quantity lives on a fixed scale (accuracies, cosines, differences
around 0). What a learner sees is then what another machine computes, and the stored notebook outputs that nbval
compares hold on any CPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

import pandas as pd

from .checks import check_int

SIGNIFICANT_DIGITS = 3
"""Default significant digits: survives a relative change of ~1e-4 in the underlying float except at a rounding
boundary, and is finer than any interval the course reports."""

_FIXED_RANGE = (1e-3, 1e5)  # magnitudes shown in fixed notation; smaller or larger ones in scientific notation


def fmt(value: float, digits: int = SIGNIFICANT_DIGITS, *, decimals: int | None = None, sign: bool = False) -> str:
    """``value`` rounded for display: ``digits`` significant digits, or ``decimals`` fixed decimals when given.

    Fixed notation with thousands separators between 1e-3 and 1e5 (``1,120``, ``48.8``, ``0.0214``), scientific
    outside (``3.02e+05``). A value that rounds to zero is shown without a minus sign, so ``-1e-9`` and ``0.0`` print
    alike. NaN and infinities print as ``nan``/``inf``. Integers (Python or NumPy) print exactly.

    Args:
        value: the number to show.
        digits: significant digits (at least 1).
        decimals: fixed decimals (at least 0) instead of significant digits; None uses ``digits``.
        sign: always show the sign (for differences).

    Returns:
        The formatted text.

    Raises:
        TypeError: if ``value`` is not a real number (a bool included), or the ``digits``/``decimals`` used for a
            finite float is not an integer.
        ValueError: if the ``digits`` used is below 1 or the ``decimals`` used below 0.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"fmt takes a real number; got {type(value).__name__} {value!r}")
    plus = "+" if sign else ""
    if isinstance(value, Integral):
        return f"{int(value):{plus},d}"
    value = float(value)
    if not math.isfinite(value):
        return f"{value:{plus}}"
    if decimals is not None:
        check_int("decimals", decimals, minimum=0)
        text = f"{value:{plus},.{int(decimals)}f}"
    else:
        check_int("digits", digits)
        digits = int(digits)
        magnitude = abs(value)
        if magnitude == 0:
            return "0"
        exponent = math.floor(math.log10(magnitude))
        rounded = round(value, digits - 1 - exponent)
        if rounded != 0 and math.floor(math.log10(abs(rounded))) != exponent:  # 9.996 -> 10.0: one digit fewer
            exponent += 1
        if not _FIXED_RANGE[0] <= abs(rounded) < _FIXED_RANGE[1]:
            text = f"{value:{plus}.{digits - 1}e}"
        else:
            text = f"{rounded:{plus},.{max(0, digits - 1 - exponent)}f}"
    return _without_negative_zero(text, plus)


def _without_negative_zero(text: str, plus: str) -> str:
    """``-0.000`` (a tiny negative value, rounded) -> ``0.000``, or ``+0.000`` when a sign is asked for."""
    mantissa = text.split("e")[0]
    if text.startswith("-") and not any(c in "123456789" for c in mantissa):
        return plus + text[1:]
    return text


def fmt_pct(value: float, decimals: int = 1, *, sign: bool = False) -> str:
    """A share (0.933) as a percentage with fixed decimals (``93.3%``).

    Args:
        value: the share (1.0 = 100%).
        decimals: fixed decimals of the percentage.
        sign: always show the sign (for differences of shares).

    Returns:
        The formatted text, ending in ``%``.

    Raises:
        TypeError: if ``decimals`` is not an integer.
        ValueError: if ``decimals`` is negative.
    """
    return fmt(100 * float(value), decimals=decimals, sign=sign) + "%"


def fmt_interval(low: float, high: float, **style: Any) -> str:
    """``[low, high]`` with both ends formatted by ``fmt(..., **style)``.

    Args:
        low: the lower end.
        high: the upper end.
        **style: keyword arguments of ``fmt`` (``digits``, ``decimals``, ``sign``).

    Returns:
        The formatted text.

    Raises:
        TypeError, ValueError: as ``fmt``.
    """
    return f"[{fmt(low, **style)}, {fmt(high, **style)}]"


def fmt_ci(interval: Any, **style: Any) -> str:
    """A point estimate with its interval, ``48.8 [39.1, 60.7]``.

    Args:
        interval: anything with ``estimate``, ``low`` and ``high`` (a ``ConfidenceInterval``), or an
            (estimate, low, high) triple.
        **style: keyword arguments of ``fmt`` (``digits``, ``decimals``, ``sign``).

    Returns:
        The formatted text.

    Raises:
        TypeError, ValueError: as ``fmt``; a ValueError also for a sequence that does not hold exactly three values.
    """
    estimate, low, high = (
        (interval.estimate, interval.low, interval.high) if hasattr(interval, "estimate") else tuple(interval)
    )
    return f"{fmt(estimate, **style)} {fmt_interval(low, high, **style)}"


def _table_float(value: float) -> str:
    return fmt(value)


def configure_display() -> None:
    """Make pandas show every float of every table with ``fmt`` (3 significant digits), in text and HTML alike.

    Call once after the imports of a notebook. Columns that need fixed decimals go through ``format_columns``.
    """
    pd.set_option("display.float_format", _table_float)


def format_columns(frame: pd.DataFrame, styles: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """A copy of ``frame`` whose named columns are turned into strings by ``fmt(value, **style)``.

    The other columns are left to the table-wide formatter. Values that are not real numbers (or are bools) are kept
    as they are.

    Args:
        frame: the table.
        styles: maps a column name to the keyword arguments of ``fmt``, e.g. ``{"sms_acc": {"decimals": 3}}``.

    Returns:
        The formatted copy; ``frame`` is not changed.

    Raises:
        KeyError: if ``styles`` names a column that ``frame`` lacks, so a renamed column cannot silently fall back to
            the default.
        TypeError, ValueError: as ``fmt``, for a style it does not accept.
    """
    missing = [name for name in styles if name not in frame.columns]
    if missing:
        raise KeyError(f"no such column(s) {missing}; the frame has {list(frame.columns)}")
    shown = frame.copy()
    for name, style in styles.items():
        shown[name] = [fmt(v, **style) if isinstance(v, Real) and not isinstance(v, bool) else v for v in frame[name]]
    return shown
