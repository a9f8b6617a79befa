"""helpers.data: offline dataset copies, hub/local equivalence, disjoint splits and padded token batches.

Never touches the network: every test replaces ``datasets.load_dataset`` with a fake. Real-data tests read the
copies in ``$DEPTH_PRUNING_DATA`` (set to /work/shared/data when unset); expected numbers come from
/work/shared/data/README.md or are computed here without helpers.data.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from helpers.data import (
    SMS_FILE,
    WIKITEXT_FILE,
    calibration_batches,
    calibration_texts,
    disjoint_draws,
    load_sms,
    load_wikitext,
    right_pad,
    tokenize_batches,
)
from helpers.settings import DATA_ENV, data_dir

SHARED_DATA = Path("/work/shared/data")
OFFLINE_SWITCHES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def hub_calls(monkeypatch):
    """Replace the hub with a fake that records its calls and fails; tests that want a hub swap in their own."""
    calls = []

    def no_hub(*args, **kwargs):
        calls.append((args, kwargs))
        raise AssertionError("the hub must not be called")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    for name in OFFLINE_SWITCHES:
        monkeypatch.delenv(name, raising=False)
    return calls


def fake_hub(monkeypatch, dataset):
    """Make ``datasets.load_dataset`` return ``dataset``; returns the list of calls."""
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return dataset

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


@pytest.fixture
def real_data(monkeypatch):
    """The offline copies: ``$DEPTH_PRUNING_DATA`` if set (CI), else /work/shared/data."""
    if DATA_ENV not in os.environ:
        if not (SHARED_DATA / WIKITEXT_FILE).is_file():
            pytest.skip(f"no offline dataset copies in {SHARED_DATA} and ${DATA_ENV} is not set")
        monkeypatch.setenv(DATA_ENV, str(SHARED_DATA))
    return data_dir()


@pytest.fixture
def tmp_data(monkeypatch, tmp_path):
    """An empty data folder in tmp_path that ``$DEPTH_PRUNING_DATA`` points at."""
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    return tmp_path


def write(root: Path, relative: Path, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def raw_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")


def is_subsequence(part: list, whole: list) -> bool:
    remaining = iter(whole)
    return all(any(item == other for other in remaining) for item in part)


# --- WikiText ----------------------------------------------------------------------------------------------------

# Articles 0 (the rows before the first title) to 8; articles 3 and 7 are calibration.
SYNTHETIC_WIKI = (
    " intro before any title \n"
    " = Alpha = \n \n"
    " alpha   one \n"
    " = = Section = = \n"
    "\t\n"
    " alpha two \n"
    " = Beta = \n = National record \n"  # a table legend row, not a title: Beta goes on
    " beta one \n"
    " = Gamma = \n gamma one \n"
    " = Delta = \n delta one \n"
    " = Epsilon = \n"
    " = Zeta = \n zeta one \n"
    " = Eta = \n eta one \n"
    " = Theta = \r\n theta one \r\n"
)


def test_wikitext_synthetic_articles_split_by_hand(tmp_data):
    write(tmp_data, WIKITEXT_FILE, SYNTHETIC_WIKI)
    calibration = ["= Gamma =", "gamma one", "= Eta =", "eta one"]
    evaluation = [
        "intro before any title",
        "= Alpha =",
        "alpha one",
        "= = Section = =",
        "alpha two",
        "= Beta =",
        "= National record",
        "beta one",
        "= Delta =",
        "delta one",
        "= Epsilon =",
        "= Zeta =",
        "zeta one",
        "= Theta =",
        "theta one",
    ]
    assert load_wikitext("calibration", source="local") == calibration
    assert load_wikitext("evaluation", source="local") == evaluation
    assert load_wikitext(source="local") == evaluation
    assert Counter(load_wikitext("all", source="local")) == Counter(calibration + evaluation)


def test_wikitext_local_matches_readme_and_raw_file(real_data):
    rows = load_wikitext("all", source="local")
    assert len(rows) == 2891
    assert rows == [" ".join(line.split()) for line in raw_lines(real_data / WIKITEXT_FILE) if line.strip()]
    assert rows[0] == "= Robert Boulter ="


def test_wikitext_splits_are_whole_articles_and_partition_all(real_data):
    titles = [line.strip() for line in raw_lines(real_data / WIKITEXT_FILE) if re.fullmatch(r" = [^=].* = ", line)]
    assert len(titles) == 62
    everything = load_wikitext("all", source="local")
    calibration = load_wikitext("calibration", source="local")
    evaluation = load_wikitext("evaluation", source="local")

    assert [row for row in calibration if row in titles] == titles[3::4]
    assert [row for row in evaluation if row in titles] == [t for i, t in enumerate(titles) if i % 4 != 3]
    assert Counter(calibration) + Counter(evaluation) == Counter(everything)
    assert is_subsequence(calibration, everything) and is_subsequence(evaluation, everything)
    # Only section headings such as "= = History = =" occur in both; no paragraph leaks.
    shared = set(calibration) & set(evaluation)
    assert shared and all(row.startswith("= = ") for row in shared)
    assert load_wikitext("calibration", source="local") == calibration  # deterministic


def test_wikitext_hub_and_local_give_the_same_texts(real_data, monkeypatch):
    # Hub rows as the hub stores them: a leading space, a trailing newline, and empty rows in between.
    hub_rows = []
    for line in raw_lines(real_data / WIKITEXT_FILE):
        if line.strip():
            hub_rows += ["", line.rstrip() + " \n"]
    calls = fake_hub(monkeypatch, datasets.Dataset.from_dict({"text": hub_rows}))
    for split in ("all", "calibration", "evaluation"):
        assert load_wikitext(split, source="hub") == load_wikitext(split, source="local")
    args, kwargs = calls[0]
    assert args[:2] == ("Salesforce/wikitext", "wikitext-2-raw-v1") and kwargs == {"split": "test"}


def test_wikitext_auto_prefers_hub_then_falls_back(real_data, monkeypatch):
    fake_hub(monkeypatch, {"text": [" = Only On The Hub = \n", ""]})
    assert load_wikitext("all") == ["= Only On The Hub ="]

    def unreachable(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    assert len(load_wikitext("all")) == 2891
    with pytest.raises(ConnectionError):
        load_wikitext("all", source="hub")


@pytest.mark.parametrize("switch", OFFLINE_SWITCHES)
def test_offline_switch_skips_the_hub(real_data, monkeypatch, hub_calls, switch):
    monkeypatch.setenv(switch, "1")
    assert len(load_wikitext("all")) == 2891
    assert len(load_sms("all")) == 5574
    assert hub_calls == []


def test_missing_files_say_where_to_put_them(tmp_data, monkeypatch, hub_calls):
    for loader, relative in ((load_wikitext, WIKITEXT_FILE), (load_sms, SMS_FILE)):
        with pytest.raises(FileNotFoundError) as error:
            loader(source="local")
        assert str(tmp_data / relative) in str(error.value)
        assert f"${DATA_ENV}" in str(error.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        load_wikitext()
    assert hub_calls == []


def test_bad_split_and_source_are_rejected(tmp_data):
    with pytest.raises(ValueError, match="'calibration', 'evaluation', 'all'; got 'train'"):
        load_wikitext("train")
    with pytest.raises(ValueError, match="'auto', 'hub', 'local'; got 'disk'"):
        load_sms(source="disk")
    with pytest.raises(ValueError, match="between 0 and 1; got 1.5"):
        load_sms(calibration_fraction=1.5)


# --- SMS ---------------------------------------------------------------------------------------------------------


def test_sms_parsing_keeps_quotes_and_normalises_whitespace(tmp_data):
    write(
        tmp_data,
        SMS_FILE,
        'ham\tHe said "see you\n'  # an unbalanced quote must not swallow the next lines
        'spam\tWIN "now"   call  0800\r\n'
        "\n"
        "ham\t  Ok lar... \n",
    )
    frame = load_sms("all", source="local")
    assert frame["text"].tolist() == ['He said "see you', 'WIN "now" call 0800', "Ok lar..."]
    assert frame["label"].tolist() == ["ham", "spam", "ham"]
    assert list(frame.index) == [0, 1, 2]


def test_sms_rejects_malformed_lines(tmp_data):
    write(tmp_data, SMS_FILE, "ham\tfine\nno tab here\n")
    with pytest.raises(ValueError, match="line 2"):
        load_sms(source="local")


def test_sms_synthetic_stratified_split(tmp_data):
    labels = ["ham"] * 10 + ["spam"] * 5
    write(tmp_data, SMS_FILE, "".join(f"{label}\tmessage {i}\n" for i, label in enumerate(labels)))
    calibration = load_sms("calibration", source="local", calibration_fraction=0.4, seed=3)
    evaluation = load_sms("evaluation", source="local", calibration_fraction=0.4, seed=3)
    assert Counter(calibration["label"]) == {"ham": 4, "spam": 2}  # round(0.4 * 10), round(0.4 * 5)
    numbers = lambda frame: [int(text.split()[1]) for text in frame["text"]]  # noqa: E731
    assert numbers(calibration) == sorted(numbers(calibration))
    assert sorted(numbers(calibration) + numbers(evaluation)) == list(range(15))
    assert list(evaluation.index) == list(range(len(evaluation)))


def test_sms_local_matches_readme(real_data):
    frame = load_sms("all", source="local")
    assert list(frame.columns) == ["text", "label"]
    assert len(frame) == 5574
    assert frame["label"].value_counts().to_dict() == {"ham": 4827, "spam": 747}


def test_sms_calibration_is_stratified_deterministic_and_disjoint(real_data):
    everything = load_sms("all", source="local")
    calibration = load_sms("calibration", source="local")
    evaluation = load_sms("evaluation", source="local")
    # round(0.2 * 4827) = 965, round(0.2 * 747) = 149
    assert calibration["label"].value_counts().to_dict() == {"ham": 965, "spam": 149}
    assert evaluation["label"].value_counts().to_dict() == {"ham": 4827 - 965, "spam": 747 - 149}
    rows = lambda frame: list(zip(frame["text"], frame["label"]))  # noqa: E731
    assert Counter(rows(calibration)) + Counter(rows(evaluation)) == Counter(rows(everything))
    assert is_subsequence(rows(calibration), rows(everything)) and is_subsequence(rows(evaluation), rows(everything))
    pd.testing.assert_frame_equal(load_sms("calibration", source="local"), calibration)
    other_seed = load_sms("calibration", source="local", seed=1)
    assert len(other_seed) == len(calibration) and rows(other_seed) != rows(calibration)


def test_sms_hub_and_local_give_the_same_frames(real_data, monkeypatch):
    texts, labels = [], []
    for line in raw_lines(real_data / SMS_FILE):
        if line:
            label, message = line.split("\t", 1)
            texts.append(message + "\n")
            labels.append({"ham": 0, "spam": 1}[label])
    calls = fake_hub(monkeypatch, datasets.Dataset.from_dict({"sms": texts, "label": labels}))
    for split in ("all", "calibration", "evaluation"):
        pd.testing.assert_frame_equal(load_sms(split, source="hub"), load_sms(split, source="local"))
    args, kwargs = calls[0]
    assert args[0] == "ucirvine/sms_spam" and kwargs == {"split": "train"}


# --- token batches -----------------------------------------------------------------------------------------------

WORDS = ["the", "cat", "dog", "sat", "on", "mat", ".", ","] + [f"w{i}" for i in range(40)]


def tiny_tokenizer(pad_token: str | None = None, padding_side: str = "right", bos: bool = False):
    """A word-level tokenizer built in code: eos "</s>", no pad token unless asked, "<s>" first only when ``bos``.

    It deletes "~", so that "~~" is a non-blank text without tokens.
    """
    vocab = {word: i for i, word in enumerate(["[UNK]", "</s>", "<pad>", "<s>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Replace("~", "")
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="</s>", unk_token="[UNK]", pad_token=pad_token, padding_side=padding_side
    )


def alone(tokenizer: PreTrainedTokenizerFast, text: str, seq_len: int) -> list[int]:
    """The text's ids from the raw tokenizers backend, truncated by hand: independent of tokenize_batches."""
    return tokenizer.backend_tokenizer.encode(text).ids[:seq_len]


def check_rows(batches, expected_ids, pad_id, batch_size):
    """Every row holds its text's ids followed only by pad ids, with a mask of that many ones then zeros."""
    assert [len(batch["input_ids"]) for batch in batches[:-1]] == [batch_size] * (len(batches) - 1)
    rows = [(ids, mask) for batch in batches for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    assert len(rows) == len(expected_ids)
    for batch in batches:
        assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.long
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(dim=1).max())  # pads to the longest
    for (ids, mask), expected in zip(rows, expected_ids):
        n = len(expected)
        assert int(mask.sum()) == n
        assert mask.tolist() == [1] * n + [0] * (len(mask) - n)
        assert ids[:n].tolist() == expected
        assert ids[n:].tolist() == [pad_id] * (len(ids) - n)


TEXTS = [
    "the cat sat on the mat .",
    "",
    "dog",
    "   ",
    "~~",
    "the dog sat , the cat sat , the dog sat on the mat , the cat sat on the dog .",
    "cat on mat",
    "an unknown word",
]


def test_right_pad_keeps_real_tokens_first_and_masks_the_rest():
    batch = right_pad([(5, 6, 7), [8], []], pad_id=9)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 9], [9, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_batches_right_pad_with_eos_without_touching_the_tokenizer(padding_side):
    tokenizer = tiny_tokenizer(padding_side=padding_side)
    batches = tokenize_batches(tokenizer, TEXTS, seq_len=10, batch_size=2)
    eos = tokenizer.convert_tokens_to_ids("</s>")
    expected = [alone(tokenizer, text, 10) for text in TEXTS if alone(tokenizer, text, 10)]
    assert len(expected) == 5 and max(map(len, expected)) == 10  # empty texts skipped, the long one truncated
    check_rows(batches, expected, eos, batch_size=2)
    assert tokenizer.pad_token is None and tokenizer.padding_side == padding_side


def test_batches_use_the_pad_token_when_there_is_one():
    tokenizer = tiny_tokenizer(pad_token="<pad>")
    batches = tokenize_batches(tokenizer, TEXTS, seq_len=64, batch_size=3)
    expected = [alone(tokenizer, text, 64) for text in TEXTS if alone(tokenizer, text, 64)]
    check_rows(batches, expected, tokenizer.convert_tokens_to_ids("<pad>"), batch_size=3)


def test_batches_pick_samples_deterministically():
    tokenizer = tiny_tokenizer()
    texts = [f"w{i} " + "the cat " * (i % 5) for i in range(40)]

    def picked(n_samples, seed):
        batches = tokenize_batches(tokenizer, texts, n_samples=n_samples, seq_len=8, batch_size=4, seed=seed)
        first_words = tokenizer.convert_ids_to_tokens([int(i) for b in batches for i in b["input_ids"][:, 0]])
        return [int(word[1:]) for word in first_words]

    seven = picked(7, seed=0)
    assert len(set(seven)) == 7
    assert picked(7, seed=0) == seven
    assert picked(3, seed=0) == seven[:3]
    assert picked(7, seed=1) != seven
    assert sorted(picked(40, seed=0)) == list(range(40))
    order = list(range(40))
    random.Random(0).shuffle(order)
    assert seven == order[:7]


def test_batches_by_length_hold_the_same_rows_shortest_first_with_minimal_padding():
    tokenizer = tiny_tokenizer()
    texts = [f"w{i} " + "the cat " * (i % 5) for i in range(40)]
    options = dict(n_samples=13, seq_len=8, batch_size=4, seed=3)
    picked = [
        row[mask.bool()].tolist()
        for batch in tokenize_batches(tokenizer, texts, **options)
        for row, mask in zip(batch["input_ids"], batch["attention_mask"])
    ]
    by_length = tokenize_batches(tokenizer, texts, **options, by_length=True)
    rows = [
        row[mask.bool()].tolist()
        for batch in by_length
        for row, mask in zip(batch["input_ids"], batch["attention_mask"])
    ]
    # Insertion by hand: each row goes after every picked row no longer than it (a stable sort by length).
    expected = []
    for row in picked:
        expected.insert(sum(len(other) <= len(row) for other in expected), row)
    assert rows == expected
    assert [batch["input_ids"].shape for batch in by_length] == [
        (len(expected[i : i + 4]), len(expected[i : i + 4][-1])) for i in range(0, len(expected), 4)
    ]
    assert all(batch["attention_mask"][:, 0].all() for batch in by_length)  # right padding, as without by_length


@pytest.mark.parametrize("bos", [False, True])
def test_batches_skip_empty_picks_and_take_the_next(bos):
    tokenizer = tiny_tokenizer(bos=bos)  # with bos even "" has a token, yet blank texts must be skipped all the same
    texts = ["", "cat", " ", "dog"] if bos else ["", "cat", " ", "~~", "dog"]  # "~~" has no token without bos
    batches = tokenize_batches(tokenizer, texts, n_samples=2, seq_len=4)
    assert sorted(batches[0]["input_ids"][:, -1].tolist()) == sorted(tokenizer.convert_tokens_to_ids(["cat", "dog"]))
    with pytest.raises(ValueError, match=f"only 2 of the {len(texts)} texts"):
        tokenize_batches(tokenizer, texts, n_samples=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_samples": 9}, "n_samples must be between 1 and 8, or None for all texts; got 9"),
        ({"n_samples": 0}, "n_samples must be between 1 and 8, or None for all texts; got 0"),
        ({"seq_len": 0}, "seq_len must be at least 1; got 0"),
        ({"batch_size": 0}, "batch_size must be at least 1; got 0"),
    ],
)
def test_batches_reject_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tokenize_batches(tiny_tokenizer(), TEXTS, **kwargs)


@pytest.mark.parametrize(
    ("texts", "kwargs", "message"),
    [
        (TEXTS, {"n_samples": 2.5}, r"n_samples must be an integer, or None for all texts; got 2.5 \(float\)"),
        (TEXTS, {"seq_len": 2.5}, r"seq_len must be an integer; got 2.5"),
        (TEXTS, {"batch_size": True}, r"batch_size must be an integer; got True"),
        ([None, "x"], {}, r"texts must all be strings; texts\[0\] is None"),
    ],
)
def test_batches_reject_wrong_types(texts, kwargs, message):
    with pytest.raises(TypeError, match=message):
        tokenize_batches(tiny_tokenizer(), texts, **kwargs)
    with pytest.raises(ValueError, match="texts is empty"):
        tokenize_batches(tiny_tokenizer(), [])


@pytest.mark.parametrize("relative", [WIKITEXT_FILE, SMS_FILE])
def test_empty_or_wrongly_encoded_data_files_are_named(tmp_data, relative):
    load = load_wikitext if relative == WIKITEXT_FILE else load_sms
    path = tmp_data / relative
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is empty \(0 bytes\); it should be "):
        load(source="local")
    path.write_bytes("ham\tcaf\u00e9 = Caf\u00e9 =\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not UTF-8 text \(byte 7"):
        load(source="local")
    path.write_bytes("ham\tna\u00ef".encode("utf-8")[:-1])  # cut inside the two bytes of "\u00ef"
    with pytest.raises(ValueError, match=r"not UTF-8 text .*interrupted download"):
        load(source="local")


def test_truncated_data_files_say_the_split_is_empty(tmp_data):
    write(tmp_data, WIKITEXT_FILE, " = Only article = \n\n Some text .\n")  # no 4th article: no calibration rows
    with pytest.raises(
        ValueError,
        match=r"'calibration' split of WikiText-2 is empty: the offline copy .*wiki\.test"
        r"\.raw holds only 2 non-empty rows in 1 article\(s\)\. Is it truncated",
    ):
        load_wikitext("calibration", source="local")
    write(tmp_data, WIKITEXT_FILE, "".join(f" = Article {i} = \n Short text .\n" for i in range(4)))
    with pytest.raises(ValueError, match=r"none of the 2 WikiText calibration rows is a paragraph of 200\+ characters"):
        calibration_batches(tiny_tokenizer(), source="local")
    write(tmp_data, SMS_FILE, "ham\thi there\n")
    with pytest.raises(ValueError, match=r"'calibration' split of the SMS collection is empty: .* 1 message\(s\)"):
        load_sms("calibration", source="local")


def test_calibration_batches_are_wikitext_paragraphs(real_data):
    tokenizer = tiny_tokenizer()
    paragraphs = [
        row for row in load_wikitext("calibration", source="local") if not row.startswith("=") and len(row) >= 200
    ]
    batches = calibration_batches(tokenizer, n_samples=10, seq_len=32, batch_size=4, source="local")
    assert [len(batch["input_ids"]) for batch in batches] == [4, 4, 2]
    expected = tokenize_batches(tokenizer, paragraphs, n_samples=10, seq_len=32, batch_size=4)
    for got, want in zip(batches, expected, strict=True):
        assert torch.equal(got["input_ids"], want["input_ids"])
        assert torch.equal(got["attention_mask"], want["attention_mask"])
    assert all(int(batch["attention_mask"].sum(dim=1).min()) == 32 for batch in batches)  # paragraphs fill seq_len


def test_calibration_batches_from_sms(real_data):
    batches = calibration_batches(tiny_tokenizer(), "sms", n_samples=5, seq_len=16, source="local")
    assert sum(len(batch["input_ids"]) for batch in batches) == 5
    with pytest.raises(ValueError, match="'wikitext', 'sms'; got 'c4'"):
        calibration_batches(tiny_tokenizer(), "c4")


# --- calibration texts and disjoint draws --------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["wikitext", "sms"])
def test_calibration_texts_are_what_calibration_batches_samples(real_data, dataset):
    tokenizer = tiny_tokenizer()
    texts = calibration_texts(dataset)
    if dataset == "wikitext":
        assert all(not text.startswith("= ") and len(text) >= 200 for text in texts)
        assert is_subsequence(texts, load_wikitext("calibration"))
    else:
        assert texts == load_sms("calibration")["text"].tolist()
    by_hand = tokenize_batches(tokenizer, texts, n_samples=5, seq_len=16, seed=3)
    batches = calibration_batches(tokenizer, dataset, n_samples=5, seq_len=16, seed=3)
    assert len(by_hand) == len(batches)
    for a, b in zip(by_hand, batches):
        assert all(torch.equal(a[key], b[key]) for key in ("input_ids", "attention_mask"))


def test_disjoint_draws_are_disjoint_sized_and_deterministic():
    items = [f"text {i}" for i in range(23)]
    draws = disjoint_draws(items, n_draws=4, n_samples=5, seed=7)
    assert [len(draw) for draw in draws] == [5, 5, 5, 5]
    flat = [item for draw in draws for item in draw]
    assert len(set(flat)) == 20 and set(flat) <= set(items)
    assert draws == disjoint_draws(items, n_draws=4, n_samples=5, seed=7)
    assert draws != disjoint_draws(items, n_draws=4, n_samples=5, seed=8)
    # one shuffle cut into slices: fewer draws are a prefix of more
    assert disjoint_draws(items, n_draws=2, n_samples=5, seed=7) == draws[:2]
    assert disjoint_draws(range(10), n_draws=2, n_samples=5, seed=0)[0] != list(range(5))  # shuffled


def test_disjoint_draws_refuse_too_few_items_and_bad_counts():
    with pytest.raises(ValueError, match="need 12 items; only 11"):
        disjoint_draws(list(range(11)), n_draws=3, n_samples=4)
    with pytest.raises(ValueError, match="n_draws"):
        disjoint_draws(list(range(11)), n_draws=0, n_samples=4)
    with pytest.raises(TypeError, match="n_samples"):
        disjoint_draws(list(range(11)), n_draws=2, n_samples=2.5)
