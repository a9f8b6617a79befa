"""Progress bars: on when asked, and switched off by TQDM_DISABLE (the nbval kernels rely on that; tqdm's notebook
bar would ignore the variable on its own)."""

import pytest
from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer

from helpers.perplexity import perplexity
from helpers.settings import progress_bar

TEXTS = ["you free win call now cash prize hi see at home later ok love"] * 4


def test_disabled_progress_is_the_bare_iterable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    items = [1, 2, 3]
    assert progress_bar(items, "x", enabled=False) is items


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_enabled_progress_draws_a_bar(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, value: str
) -> None:
    monkeypatch.setenv("TQDM_DISABLE", value)
    assert list(progress_bar(range(3), "counting", enabled=True)) == [0, 1, 2]
    assert "counting" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["1", "true", "True"])
def test_tqdm_disable_wins_over_an_enabled_bar(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, value: str
) -> None:
    monkeypatch.setenv("TQDM_DISABLE", value)
    items = [1, 2, 3]
    assert progress_bar(items, "counting", enabled=True) is items
    perplexity(tiny_model("llama"), tiny_tokenizer(), TEXTS, seq_len=8, progress=True)
    assert capsys.readouterr().err == ""
