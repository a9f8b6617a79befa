"""Argument checks shared by the helpers, run before anything is computed or changed.

A wrong type is a TypeError and a wrong value a ValueError; both say what was given and what would be valid, so a
typo like ``seq_len=2.5`` fails at the call instead of deep inside torch or, worse, silently doing something else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral


def check_int(
    name: str, value: object, *, minimum: int = 1, maximum: int | None = None, none_means: str | None = None
) -> None:
    """Check that ``value`` is an integer (not a bool) between ``minimum`` and ``maximum``.

    Args:
        name: the argument's name, for the error message.
        value: the value to check.
        minimum: the smallest valid value.
        maximum: the largest valid value; None for no upper bound.
        none_means: what ``None`` stands for when it is allowed (e.g. "all texts"); by default None is refused.

    Raises:
        TypeError: if ``value`` is not an integer (a bool, a float, None when it is not allowed...).
        ValueError: if ``value`` lies outside ``minimum``..``maximum``.
    """
    if value is None and none_means is not None:
        return
    alternative = f", or None for {none_means}" if none_means is not None else ""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer{alternative}; got {value!r} ({type(value).__name__})")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {bounds}{alternative}; got {value!r}")


def check_bool(name: str, value: object) -> None:
    """Check that ``value`` is True or False: a flag given as "no", 0 or None would be read by its truth value.

    Args:
        name: the argument's name, for the error message.
        value: the value to check.

    Raises:
        TypeError: if ``value`` is not a bool.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r} ({type(value).__name__})")


def check_choice(name: str, value: object, choices: Sequence[str], *, none_means: str | None = None) -> None:
    """Check that ``value`` is one of the strings ``choices``.

    Args:
        name: the argument's name, for the error message.
        value: the value to check.
        choices: the valid strings.
        none_means: what ``None`` stands for when it is allowed (e.g. "no normalisation"); by default it is refused.

    Raises:
        TypeError: if ``value`` is not a string (None included, when it is not allowed).
        ValueError: if ``value`` is a string that is not among ``choices``.
    """
    if value is None and none_means is not None:
        return
    alternative = f", or None for {none_means}" if none_means is not None else ""
    valid = f"{name} must be one of {', '.join(map(repr, choices))}{alternative}"
    if not isinstance(value, str):
        raise TypeError(f"{valid}; got {value!r} ({type(value).__name__})")
    if value not in choices:
        raise ValueError(f"{valid}; got {value!r}")


def check_mapping(name: str, value: object, form: str) -> None:
    """Check that ``value`` is a mapping (a dict) such as ``{name: blocks to remove}``: a list in its place would have
    no names to show the results under.

    Args:
        name: the argument's name, for the error message.
        value: the value to check.
        form: the expected form, e.g. "{name: blocks to remove}".

    Raises:
        TypeError: if ``value`` is not a mapping (a list of its values, say, which would lose their names).
    """
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping {form}; got a {type(value).__name__}")


def check_texts(texts: object) -> list[str]:
    """Check that ``texts`` holds strings (a list, a pandas Series...) and return them as a list.

    A single string is refused, since it would be read character by character.

    Args:
        texts: the texts to check.

    Returns:
        The texts as a new list of strings.

    Raises:
        TypeError: if ``texts`` is a single string, is not iterable, or holds something that is not a string.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string (it would be read character by character)")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"texts must be a list of strings; got {type(texts).__name__}") from None
    not_text = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if not_text is not None:
        raise TypeError(f"texts must all be strings; texts[{not_text}] is {texts[not_text]!r}")
    return texts
