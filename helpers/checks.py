"""Argument checks shared by the helpers, run before anything is computed or changed.

A wrong type is a TypeError and a wrong value a ValueError; both say what was given and what would be valid, so a
typo like ``seq_len=2.5`` fails at the call instead of deep inside torch or, worse, silently doing something else.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral


def check_int(
    name: str, value: object, *, minimum: int = 1, maximum: int | None = None, none_means: str | None = None
) -> None:
    """Check that ``value`` is an integer (not a bool) between ``minimum`` and ``maximum`` (None: no upper bound).

    ``none_means``: what ``None`` stands for when it is allowed (e.g. "all texts"); by default None is refused.
    """
    if value is None and none_means is not None:
        return
    alternative = f", or None for {none_means}" if none_means is not None else ""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer{alternative}; got {value!r} ({type(value).__name__})")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {bounds}{alternative}; got {value!r}")


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """Check that ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
