"""compare_variants against direct evaluation of really pruned copies."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from helpers.classification import sms_accuracy
from helpers.comparison import compare_variants
from helpers.perplexity import perplexity
from helpers.pruning import prune_blocks
from tiny_models import tiny_model
from tiny_tokenizer import WORDS, tiny_tokenizer

PLAIN_WORDS = [w for w in WORDS if not w.startswith("##")]
VARIANTS = {"early": [1, 2], "late": [4]}


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(PLAIN_WORDS, k=rng.randint(3, 10))) for _ in range(n)]


def sms(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    return pd.DataFrame({"text": sentences(n, seed), "label": [rng.choice(["ham", "spam"]) for _ in range(n)]})


@pytest.fixture(scope="module")
def setup():
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    texts, frame, examples = sentences(40, 1), sms(30, 2), sms(20, 3)
    table = compare_variants(
        model, tokenizer, VARIANTS, texts={"wiki": texts}, sms=frame, sms_examples=examples, shots=2,
        seq_len=16, max_windows=None, max_sms=None, progress=False,
    )
    return model, tokenizer, texts, frame, examples, table


def test_rows_equal_direct_evaluation_of_pruned_copies(setup):
    model, tokenizer, texts, frame, examples, table = setup
    assert list(table.index) == ["full", "early", "late"]
    for name, blocks in [("full", None), *VARIANTS.items()]:
        variant = model if blocks is None else prune_blocks(model, blocks)
        ppl = perplexity(variant, tokenizer, texts, seq_len=16, progress=False).ppl
        acc = sms_accuracy(variant, tokenizer, frame, shots=2, examples=examples, decision="prior", progress=False)
        assert table.loc[name, "ppl_wiki"] == pytest.approx(ppl, rel=1e-5)
        assert table.loc[name, "sms_acc"] == pytest.approx(acc.accuracy)
        assert table.loc[name, "sms_baseline"] == pytest.approx(acc.baseline)
        assert table.loc[name, "ppl_wiki_low"] <= table.loc[name, "ppl_wiki"] <= table.loc[name, "ppl_wiki_high"]


def test_sizes_and_reference_differences(setup):
    model, _, _, _, _, table = setup
    total = sum(p.numel() for p in model.parameters())  # tied weights: the tiny llama has none tied
    removed = sum(p.numel() for i in VARIANTS["early"] for p in model.model.layers[i].parameters())
    assert table.loc["early", "removed"] == "1,2" and table.loc["full", "removed"] == "-"
    assert table.loc["early", "params_removed_pct"] == pytest.approx(100 * removed / total)
    assert table.loc["full", "ideal_speedup"] == 1.0 and table.loc["early", "ideal_speedup"] > 1.0
    for column in ("ppl_wiki_diff_low", "ppl_wiki_diff_high", "sms_acc_diff_low", "sms_acc_diff_high"):
        assert table.loc["full", column] == 0
    assert set(table.attrs["results"]) == {"full", "early", "late"}


def test_bad_arguments_raise(setup):
    model, tokenizer, texts, frame, _, _ = setup
    with pytest.raises(ValueError, match="reference 'nope' is not a variant"):
        compare_variants(model, tokenizer, VARIANTS, texts={"wiki": texts}, reference="nope", progress=False)
    with pytest.raises(ValueError, match="few-shot SMS needs `sms_examples`"):
        compare_variants(model, tokenizer, VARIANTS, texts={}, sms=frame, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        compare_variants(model, tokenizer, {"bad": [9]}, texts={"wiki": texts}, progress=False)
    with pytest.raises(ValueError, match=r"'full' is reserved .* given blocks \[1, 2\]; give that variant another name"):
        compare_variants(model, tokenizer, {"full": [1, 2]}, texts={"wiki": texts}, progress=False)
