"""A tiny word-piece tokenizer built in code (no download) whose ids fit the tiny models' vocabulary.

" ham" is one token and " spam" two ("sp", "##am"), so label scoring meets labels of different token lengths.
Special ids match ``tiny_models``: pad 0, BOS 1, EOS 2.
"""

from __future__ import annotations

from tiny_models import VOCAB
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
WORDS = [
    "Message",
    ":",
    "Is",
    "this",
    "message",
    "sp",
    "##am",
    "or",
    "ham",
    "?",
    "Answer",
    "the",
    "a",
    "you",
    "free",
    "win",
    "call",
    "now",
    "cash",
    "prize",
    "hi",
    "see",
    "at",
    "home",
    "later",
    "ok",
    "love",
    "txt",
    "to",
    "claim",
    "!",
    ".",
    ",",
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "I",
    "am",
    "going",
    "be",
    "there",
    "soon",
    "your",
    "mobile",
    "has",
    "won",
    "reply",
    "stop",
]
assert len(SPECIALS) + len(WORDS) <= VOCAB


def tiny_tokenizer(add_bos: bool = False) -> PreTrainedTokenizerFast:
    """Word-piece tokenizer over ``WORDS``; ``add_bos=True`` puts [BOS] in front of every text, like Llama-2's."""
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]", unk_token="[UNK]"
    )
