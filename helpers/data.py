"""The course datasets (WikiText-2 and the SMS Spam Collection) and the token batches built from them.

Each loader reads the dataset hub and falls back to the offline copy under ``data_dir()``. Both sources are
normalised the same way, so a notebook gets the very same texts online and offline. Only one split of each dataset
exists offline (WikiText-2 test, SMS train), so the calibration texts (which pruning decisions are fitted on) and
the evaluation texts (which they are judged on) are both cut from it, deterministically and disjointly: calibrating
and evaluating on the same texts would flatter every pruning method.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar, get_args

import pandas as pd
import torch
from torch.nn.utils.rnn import pad_sequence

from .checks import check_choice, check_int, check_texts
from .settings import DATA_ENV, data_dir

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

T = TypeVar("T")
Split = Literal["calibration", "evaluation", "all"]
Source = Literal["auto", "hub", "local"]
CalibrationDataset = Literal["wikitext", "sms"]
SPLITS: tuple[Split, ...] = get_args(Split)
SOURCES: tuple[Source, ...] = get_args(Source)
CALIBRATION_DATASETS: tuple[CalibrationDataset, ...] = get_args(CalibrationDataset)

WIKITEXT_FILE = Path("wikitext-2-raw") / "wiki.test.raw"
"""Offline WikiText-2 copy, relative to ``data_dir()``."""
SMS_FILE = Path("sms_spam") / "SMSSpamCollection"
"""Offline SMS Spam Collection copy, relative to ``data_dir()``."""
SMS_LABELS = ("ham", "spam")
"""SMS label names; the hub stores them as 0 and 1 in this order."""

CALIBRATION_EVERY = 4
"""WikiText article ``i`` goes to calibration when ``i % CALIBRATION_EVERY == CALIBRATION_EVERY - 1``."""
MIN_PARAGRAPH_CHARS = 200
"""``calibration_batches`` keeps WikiText rows at least this long, so that samples are paragraphs, not captions."""

_OFFLINE_ENVS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
_WIKITEXT_ORIGIN = (
    "WikiText-2 raw, test split (Merity et al., 2016): the file wiki.test.raw of the wikitext-2-raw-v1 archive, or "
    "the hub dataset Salesforce/wikitext (config wikitext-2-raw-v1, split test) written one row per line"
)
_SMS_ORIGIN = (
    "the UCI SMS Spam Collection v.1 (Almeida and Gomez Hidalgo, 2011): the file SMSSpamCollection of its archive, "
    "'label<TAB>message' lines with no header"
)


def _normalise(text: str) -> str:
    """Collapse every run of whitespace to one space and strip the ends, identically for hub and local rows."""
    return " ".join(text.split())


def _hub_disabled() -> str | None:
    """The name of the set offline switch (``HF_DATASETS_OFFLINE``/``HF_HUB_OFFLINE``), or None when none is set."""
    for name in _OFFLINE_ENVS:
        if os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}:
            return name
    return None


def hub_or_local(source: Source, local: Path, origin: str, path: str, name: str | None, split: str) -> Dataset | None:
    """The hub dataset ``path``/``name``/``split``, or None when the caller is to read ``local`` instead.

    ``source="auto"`` tries the hub unless an offline switch is set, then falls back to ``local``. Raises
    FileNotFoundError, saying which file to put where, when neither is available.
    """
    check_choice("source", source, SOURCES)
    if source == "local":
        reason = "source='local'"
    elif source == "auto" and (switch := _hub_disabled()):
        reason = f"the hub was not tried because {switch} is set"
    else:
        import datasets  # only here: importing it is slow and offline runs never need it

        try:
            return datasets.load_dataset(path, name, split=split)
        except Exception as error:  # an unreachable hub fails in many ways (ConnectionError, HTTP errors, ...)
            if source == "hub":
                raise
            reason = f"the hub failed with {type(error).__name__}: {error}"
    if not local.is_file():
        raise FileNotFoundError(
            f"No offline copy at {local} ({reason}). That file is {origin}; put it there, or set ${DATA_ENV} to a "
            f"folder that holds it as {local.relative_to(data_dir())}. See data/README.md."
        )
    return None


def _read_lines(path: Path, origin: str) -> list[str]:
    """The file's lines, split on ``\\n`` only, so that no other line-break character ever splits a row.

    The ``\\r`` of ``\\r\\n`` endings is whitespace, which the loaders' normalisation removes anyway. An empty
    file or one that is not UTF-8 (another encoding, or cut inside a character) is refused, naming the file and
    what it should be (``origin``).
    """
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); it should be {origin}. Replace it with a complete copy.")
    try:
        return path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {error.start}: {error.reason}); it should be {origin}. It may be "
            "saved in another encoding (re-save it as UTF-8) or cut off by an interrupted download."
        ) from error


def _refuse_empty_split(split: str, what: str, found: str, local: Path | None) -> None:
    """Raise for a split with nothing in it: the data source is too short, most likely a truncated file."""
    where = f"the offline copy {local}" if local is not None else "the hub copy"
    raise ValueError(
        f"the {split!r} split of {what} is empty: {where} holds only {found}. Is it truncated? Replace it with a "
        "complete copy (see data/README.md)."
    )


def _is_article_title(row: str) -> bool:
    """True for a normalised top-level WikiText heading ("= Robert Boulter =").

    Not for a section heading ("= = Career = =") nor a table legend row ("= National record"), which has no closing "=".
    """
    return row.startswith("= ") and row.endswith(" =") and not row.startswith("= = ")


def load_wikitext(split: Split = "evaluation", *, source: Source = "auto") -> list[str]:
    """Non-empty rows of the WikiText-2 (raw) test split, whitespace-normalised, for perplexity and calibration.

    Args:
        split: "calibration" holds every fourth article (index % 4 == 3, in file order; an article starts at its
            top-level heading), "evaluation" the others, "all" both; whole articles, so no text leaks across the two.
        source: "hub" (``Salesforce/wikitext``), "local" (``<data_dir()>/wikitext-2-raw/wiki.test.raw``) or "auto"
            (hub, then local; local only when ``HF_DATASETS_OFFLINE`` or ``HF_HUB_OFFLINE`` is set).

    Returns:
        The rows of the split, in file order (headings included).

    Raises:
        TypeError: if ``split`` or ``source`` is not a string.
        ValueError: if ``split`` or ``source`` is not a valid choice; if the offline copy is empty or not UTF-8; if
            the split comes out empty (a truncated copy).
        FileNotFoundError: if the offline copy is needed and missing (the message says what to put where).
        Exception: with ``source="hub"``, whatever the hub load raised.
    """
    check_choice("split", split, SPLITS)
    local = data_dir() / WIKITEXT_FILE
    dataset = hub_or_local(source, local, _WIKITEXT_ORIGIN, "Salesforce/wikitext", "wikitext-2-raw-v1", "test")
    raw = _read_lines(local, _WIKITEXT_ORIGIN) if dataset is None else dataset["text"]
    rows = [row for row in map(_normalise, raw) if row]
    wanted = split == "calibration"
    kept, article = [], 0
    for position, row in enumerate(rows):
        if _is_article_title(row) and position > 0:
            article += 1
        if split == "all" or (article % CALIBRATION_EVERY == CALIBRATION_EVERY - 1) == wanted:
            kept.append(row)
    if not kept:
        found = f"{len(rows)} non-empty rows in {article + 1 if rows else 0} article(s)"
        _refuse_empty_split(split, "WikiText-2", found, local if dataset is None else None)
    return kept


def _read_sms_file(path: Path) -> tuple[list[str], list[str]]:
    """(texts, labels) of a ``label<TAB>message`` file, one tab per line (a second one would glue another field into
    the message); quotes are ordinary characters."""
    texts, labels = [], []
    for number, line in enumerate(_read_lines(path, _SMS_ORIGIN), start=1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab or label not in SMS_LABELS or "\t" in text:
            raise ValueError(
                f"{path}, line {number}: expected 'label<TAB>message' with exactly one tab and the label ham or spam; "
                f"got {line!r}"
            )
        texts.append(text)
        labels.append(label)
    return texts, labels


def load_sms(
    split: Split = "evaluation", *, source: Source = "auto", calibration_fraction: float = 0.2, seed: int = 0
) -> pd.DataFrame:
    """SMS Spam Collection messages, stratified into a calibration and an evaluation split.

    Args:
        split: "calibration" takes ``round(calibration_fraction * n)`` messages of each label, picked by shuffling
            that label's row positions with ``random.Random(seed)``; "evaluation" the rest; "all" every message. Both
            keep file order, and the stratification keeps the spam share equal in both, so the two can be compared.
        source: "hub" (``ucirvine/sms_spam``), "local" (``<data_dir()>/sms_spam/SMSSpamCollection``) or "auto", as in
            ``load_wikitext``.
        calibration_fraction: the share of each label that goes to calibration, in [0, 1].
        seed: the seed of the calibration draw.

    Returns:
        A frame with columns ``text`` (whitespace-normalised) and ``label`` ("ham"/"spam") and a fresh RangeIndex.

    Raises:
        TypeError: if ``split`` or ``source`` is not a string.
        ValueError: if ``split`` or ``source`` is not a valid choice, or ``calibration_fraction`` is outside [0, 1];
            if the offline copy is empty, not UTF-8 or has a line that is not ``ham|spam<TAB>message`` (one tab); if
            the split comes out empty.
        FileNotFoundError: if the offline copy is needed and missing (the message says what to put where).
        Exception: with ``source="hub"``, whatever the hub load raised.
    """
    check_choice("split", split, SPLITS)
    if not 0 <= calibration_fraction <= 1:
        raise ValueError(f"calibration_fraction must be between 0 and 1; got {calibration_fraction}")
    local = data_dir() / SMS_FILE
    dataset = hub_or_local(source, local, _SMS_ORIGIN, "ucirvine/sms_spam", None, "train")
    if dataset is None:
        texts, labels = _read_sms_file(local)
    else:
        texts, labels = list(dataset["sms"]), [SMS_LABELS[int(label)] for label in dataset["label"]]
    frame = pd.DataFrame({"text": [_normalise(text) for text in texts], "label": labels})
    if split != "all":
        calibration = set()
        for label in SMS_LABELS:
            positions = [position for position, value in enumerate(labels) if value == label]
            random.Random(seed).shuffle(positions)
            calibration.update(positions[: round(calibration_fraction * len(positions))])
        in_calibration = frame.index.isin(list(calibration))
        frame = frame[in_calibration if split == "calibration" else ~in_calibration].reset_index(drop=True)
    if frame.empty:
        where = local if dataset is None else None
        _refuse_empty_split(split, "the SMS collection", f"{len(labels)} message(s)", where)
    return frame


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Token rows of different lengths as one batch padded on the right, so every row's real tokens keep positions
    0..n-1.

    Args:
        rows: the token ids of each row.
        pad_id: the id written after each row's tokens.

    Returns:
        ``{"input_ids": ..., "attention_mask": ...}``: long tensors of shape (len(rows), longest row), the mask 1 on
        real tokens.
    """
    ids = [torch.tensor(row, dtype=torch.long) for row in rows]
    return {
        "input_ids": pad_sequence(ids, batch_first=True, padding_value=pad_id),
        "attention_mask": pad_sequence([torch.ones_like(row) for row in ids], batch_first=True, padding_value=0),
    }


def tokenize_batches(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    n_samples: int | None = None,
    seq_len: int = 128,
    batch_size: int = 8,
    seed: int = 0,
    by_length: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Tokenise texts into right-padded batches (``input_ids``, ``attention_mask``) to feed a model.

    Texts with no tokens (empty, whitespace) are skipped and the next pick is taken. Rows are padded on the right
    whatever the tokenizer's ``padding_side``, so every mask is a prefix of ones and real tokens keep positions
    0..n-1; the pad id is the tokenizer's pad token, else its eos token. The tokenizer is not modified.

    Args:
        tokenizer: the model's tokenizer.
        texts: the texts to pick from.
        n_samples: how many texts to take, picked by shuffling positions with ``random.Random(seed)`` and kept in
            that order (the picks for a smaller ``n_samples`` are a prefix of those for a larger one); None takes all
            texts in order.
        seq_len: each text is truncated to this many tokens.
        batch_size: rows per batch (the last batch may hold fewer).
        seed: the seed of the pick.
        by_length: batch the same rows shortest first (ties in pick order), so a short text is not padded to a long
            one's length: for SMS messages that removes most of the padded positions a model would otherwise
            compute on.

    Returns:
        A list of ``right_pad`` batches.

    Raises:
        TypeError: if ``texts`` is not a list of strings (``check_texts``), or ``n_samples``, ``seq_len`` or
            ``batch_size`` is not an integer.
        ValueError: if ``texts`` is empty, ``n_samples`` is outside 1..len(texts), ``seq_len`` or ``batch_size`` is
            below 1, the tokenizer has neither a pad nor an eos token, or fewer texts than ``n_samples`` (or none)
            have any token.
    """
    texts = check_texts(texts)
    if not texts:
        raise ValueError("texts is empty; give at least one text")
    check_int("n_samples", n_samples, maximum=len(texts), none_means="all texts")
    check_int("seq_len", seq_len)
    check_int("batch_size", batch_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad token nor an eos token to pad with; set tokenizer.pad_token")

    order = list(range(len(texts)))
    if n_samples is not None:
        random.Random(seed).shuffle(order)
    wanted = len(texts) if n_samples is None else n_samples
    rows = []
    for position in order:
        if len(rows) == wanted:
            break
        if texts[position].strip():
            ids = tokenizer(texts[position], truncation=True, max_length=seq_len)["input_ids"]
            if ids:
                rows.append(list(ids))
    if not rows or (n_samples is not None and len(rows) < n_samples):
        raise ValueError(f"only {len(rows)} of the {len(texts)} texts have any token; n_samples={n_samples} needs more")
    if by_length:
        rows.sort(key=len)  # stable: equal lengths keep their pick order
    return [right_pad(rows[start : start + batch_size], pad_id) for start in range(0, len(rows), batch_size)]


def calibration_texts(dataset: CalibrationDataset = "wikitext", *, source: Source = "auto") -> list[str]:
    """The texts ``calibration_batches`` samples from: the calibration split of "wikitext" or "sms".

    For WikiText, headings and rows shorter than ``MIN_PARAGRAPH_CHARS`` characters are left out, so every sample is
    a real paragraph that fills most of a 128-token sample rather than a title or a one-line caption.

    Args:
        dataset: "wikitext" (paragraphs of ``load_wikitext("calibration")``) or "sms" (the messages of
            ``load_sms("calibration")``).
        source: where the data comes from, as in ``load_wikitext``.

    Returns:
        The texts, in file order.

    Raises:
        TypeError: if ``dataset`` is not a string; as ``load_wikitext``/``load_sms``.
        ValueError: if ``dataset`` is not "wikitext" or "sms", or no WikiText calibration row is a paragraph; as
            ``load_wikitext``/``load_sms``.
        FileNotFoundError: as ``load_wikitext``/``load_sms``.
    """
    check_choice("dataset", dataset, CALIBRATION_DATASETS)
    if dataset == "sms":
        return load_sms("calibration", source=source)["text"].tolist()
    rows = load_wikitext("calibration", source=source)
    texts = [row for row in rows if not row.startswith("= ") and len(row) >= MIN_PARAGRAPH_CHARS]
    if not texts:
        raise ValueError(
            f"none of the {len(rows)} WikiText calibration rows is a paragraph of {MIN_PARAGRAPH_CHARS}+ "
            f"characters; the data is too short (a truncated {data_dir() / WIKITEXT_FILE}?)"
        )
    return texts


def disjoint_draws(items: Sequence[T], *, n_draws: int, n_samples: int, seed: int = 0) -> list[list[T]]:
    """``n_draws`` disjoint random draws of ``n_samples`` items each: one seeded shuffle, cut into consecutive slices.

    Two draws never share a position of ``items`` (equal texts at two positions can still meet, as in the data).
    Used to measure resampling noise: two draws of the same data differ only by chance.

    Args:
        items: what to draw from (texts, or sample indices).
        n_draws: how many draws.
        n_samples: items per draw.
        seed: seeds the shuffle (``random.Random(seed)``).

    Returns:
        A list of ``n_draws`` lists of ``n_samples`` items, each in shuffled order.

    Raises:
        TypeError: if ``n_draws``, ``n_samples`` or ``seed`` is not an integer.
        ValueError: if ``n_draws`` or ``n_samples`` is below 1, or ``items`` holds fewer than
            ``n_draws * n_samples`` items.
    """
    check_int("n_draws", n_draws)
    check_int("n_samples", n_samples)
    check_int("seed", seed, minimum=0)
    needed = n_draws * n_samples
    if len(items) < needed:
        raise ValueError(
            f"{n_draws} disjoint draws of {n_samples} need {needed} items; only {len(items)} are given. Draw fewer "
            "or smaller samples."
        )
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [[items[i] for i in order[d * n_samples : (d + 1) * n_samples]] for d in range(n_draws)]


def calibration_batches(
    tokenizer: PreTrainedTokenizerBase,
    dataset: CalibrationDataset = "wikitext",
    *,
    n_samples: int = 10,
    seq_len: int = 128,
    batch_size: int = 8,
    seed: int = 0,
    by_length: bool = False,
    source: Source = "auto",
) -> list[dict[str, torch.Tensor]]:
    """Token batches of ``n_samples`` of the ``calibration_texts`` of "wikitext" or "sms" (see ``tokenize_batches``).

    Args:
        tokenizer: the model's tokenizer.
        dataset: "wikitext" (``load_wikitext("calibration")``) or "sms" (``load_sms("calibration")``).
        n_samples: how many texts to take, as in ``tokenize_batches``.
        seq_len: each text is truncated to this many tokens.
        batch_size: rows per batch.
        seed: the seed of the pick.
        by_length: batch shortest rows first, as in ``tokenize_batches``.
        source: where the data comes from, as in ``load_wikitext``.

    Returns:
        A list of batches, as ``tokenize_batches`` returns them.

    Raises:
        TypeError: if ``dataset`` is not a string; as ``load_wikitext``/``load_sms`` and ``tokenize_batches``.
        ValueError: if ``dataset`` is not "wikitext" or "sms", or no WikiText calibration row is a paragraph; as
            ``load_wikitext``/``load_sms`` and ``tokenize_batches``.
        FileNotFoundError: as ``load_wikitext``/``load_sms``.
    """
    texts = calibration_texts(dataset, source=source)
    return tokenize_batches(
        tokenizer, texts, n_samples=n_samples, seq_len=seq_len, batch_size=batch_size, seed=seed, by_length=by_length
    )
