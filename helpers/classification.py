"""SMS spam classification by comparing how likely the model finds each label word after a prompt.

No generation and no parsing: for every message the model scores the continuations " ham" and " spam" after
"...Answer:" (sum of the log-probabilities of the continuation's tokens, so labels of several tokens are scored
correctly) and the likelier one is the prediction. Plain-text prompts work the same for base and instruct models.
Few-shot prompts put k solved examples, balanced between the labels and drawn from a separate frame, in front.

The solved examples are the same for every message and make up most of each prompt (8 shots: ~450 of ~500 tokens
for SmolLM2), so the tokens all prompts share are run once, their keys and values kept in the KV cache, and every
batch of messages runs only its own tokens on a copy of that cache: the same scores up to float rounding (also
with sliding-window attention), several times faster.

Small models are often biased toward one label word whatever the message (SmolLM2-135M answers " spam" to nearly
every prompt), so picking the likelier label can score no better than always guessing one class although the score
*differences* still rank spam above ham. ``auc`` measures that ranking without any threshold, and
``decision="prior"`` turns it into predictions that use no evaluated label: the messages with the largest spam-ham
difference are called spam, as many as the spam share of ``examples`` (e.g. the calibration split) implies.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch
from scipy import stats
from transformers import Cache, PreTrainedModel, PreTrainedTokenizerBase

from .blocks import check_decoder
from .checks import check_choice, check_int
from .data import SMS_LABELS, right_pad
from .generation import cache_argument_name
from .hooks import eval_mode, head_only_at, input_device, raise_non_finite
from .perplexity import IGNORE, token_nll
from .settings import progress_bar
from .statistics import ConfidenceInterval, bootstrap_ci, paired_difference

QUESTION = "Is this message spam or ham?"
Decision = Literal["argmax", "prior"]
DECISIONS: tuple[Decision, ...] = get_args(Decision)


@dataclass(frozen=True)
class ClassificationResult:
    """Accuracy on the evaluated messages, with everything needed to resample or inspect it.

    ``accuracy``: share of the evaluated messages classified correctly. ``correct``: one boolean per message, in
    frame order (the bootstrap resamples it). ``predictions``: predicted label per message, indexed like the evaluated
    frame. ``scores``: log-likelihood of each label's continuation (columns ``ham``, ``spam``). ``baseline``: accuracy
    of always answering ``majority_label``, the commonest label among the same messages. ``auc``: probability that a
    random spam message gets a larger spam-ham score difference than a random ham message (0.5 = no signal; NaN when
    only one label is present). ``shots``: the solved examples in the prompt (empty for zero-shot). ``messages``: the
    evaluated messages (``text``, ``label``, indexed like the frame): the units, which two results must share to be
    paired (``accuracy_difference``).
    """

    accuracy: float
    correct: np.ndarray
    predictions: pd.Series
    scores: pd.DataFrame
    baseline: float
    majority_label: str
    auc: float
    shots: pd.DataFrame
    messages: pd.DataFrame


def sms_prompt(text: str, shots: pd.DataFrame | None = None) -> str:
    """The prompt for one message, ending in "Answer:".

    Args:
        text: the message.
        shots: solved examples (columns ``text`` and ``label``) put first, each with its answer; None for zero-shot.

    Returns:
        The prompt text.
    """
    pairs = [] if shots is None else zip(shots["text"], shots["label"])
    solved = "".join(f"Message: {t}\n{QUESTION}\nAnswer: {y}\n\n" for t, y in pairs)
    return solved + f"Message: {text}\n{QUESTION}\nAnswer:"


def sms_task_batches(
    tokenizer: PreTrainedTokenizerBase,
    frame: pd.DataFrame,
    *,
    examples: pd.DataFrame,
    shots: int,
    n_samples: int,
    seed: int = 0,
    batch_size: int = 8,
) -> list[dict[str, torch.Tensor]]:
    """Calibration batches in the evaluation's task format: ``sms_prompt(text, shots)`` followed by the answer.

    Each row is the prompt's tokens followed by the tokens of " ham" or " spam" (the message's label), tokenized
    apart exactly as ``sms_accuracy`` scores them. ``labels`` is -100 everywhere except on the answer's tokens, so a
    loss-based criterion (``ppl_scores``, ``taylor_scores``, ``sleb_removal``) measures only how well the model
    answers. The shots are drawn once from ``examples`` with ``draw_shots`` (the same for every row, as in
    ``sms_accuracy``), never among the calibration messages themselves. Rows are right-padded (``right_pad``) and
    batched shortest first.

    Args:
        tokenizer: the model's tokenizer.
        frame: the messages to draw from (columns ``text``, ``label``), e.g. ``load_sms("calibration")``.
        examples: the frame the shots come from (may be ``frame``: the drawn messages are excluded).
        shots: solved examples in every prompt; 0 for zero-shot.
        n_samples: how many messages, picked by shuffling the rows of ``frame`` with ``random.Random(seed)``.
        seed: seeds the pick and ``draw_shots``.
        batch_size: rows per batch.

    Returns:
        A list of batches with ``input_ids``, ``attention_mask`` and ``labels``.

    Raises:
        TypeError: if ``shots``, ``n_samples`` or ``batch_size`` is not an integer, or a message is not a string.
        ValueError: if ``frame`` or ``examples`` is not a frame with columns ``text`` and ``label`` and labels
            ham/spam, ``n_samples`` is outside 1..len(frame), ``batch_size`` is below 1, the tokenizer has neither a
            pad nor an eos token; as ``draw_shots``.
    """
    _check_frame(frame, "frame")
    check_int("n_samples", n_samples, maximum=len(frame))
    check_int("batch_size", batch_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad token nor an eos token to pad with; set tokenizer.pad_token")
    order = list(range(len(frame)))
    random.Random(seed).shuffle(order)
    drawn = frame.iloc[order[:n_samples]]
    chosen = draw_shots(examples, shots, exclude=drawn, seed=seed) if shots else None
    answers = {label: tokenizer(" " + label, add_special_tokens=False)["input_ids"] for label in SMS_LABELS}
    rows = []
    for text, label in zip(drawn["text"], drawn["label"]):
        prompt = tokenizer(sms_prompt(text, chosen))["input_ids"]
        rows.append((list(prompt) + answers[label], len(prompt)))
    rows.sort(key=lambda row: len(row[0]))  # stable: similar lengths share a batch, so little padding is computed
    batches = []
    for start in range(0, len(rows), batch_size):
        part = rows[start : start + batch_size]
        batch = right_pad([ids for ids, _ in part], pad_id)
        labels = torch.full_like(batch["input_ids"], IGNORE)
        for row, (ids, answer_start) in enumerate(part):
            labels[row, answer_start : len(ids)] = batch["input_ids"][row, answer_start : len(ids)]
        batches.append({**batch, "labels": labels})
    return batches


def _check_frame(frame: pd.DataFrame, name: str) -> None:
    if not isinstance(frame, pd.DataFrame) or not {"text", "label"} <= set(frame.columns):
        raise ValueError(f"{name} must be a DataFrame with columns 'text' and 'label' (as load_sms returns)")
    not_text = [(label, text) for label, text in zip(frame.index.tolist(), frame["text"]) if not isinstance(text, str)]
    if not_text:
        raise TypeError(
            f"{name}['text'] at index {not_text[0][0]!r} is {not_text[0][1]!r}: the messages must be strings "
            f"({len(not_text)} are not; drop or fill them first)"
        )
    unknown = sorted(set(frame["label"]) - set(SMS_LABELS))
    if unknown:
        raise ValueError(f"{name} has labels {unknown}; valid labels are {list(SMS_LABELS)}")


def draw_shots(examples: pd.DataFrame, shots: int, *, exclude: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """``shots`` rows of ``examples``, balanced between ham and spam (ham gets the odd one), in a seeded order.

    Messages whose text also occurs in ``exclude`` are never drawn: a shot identical to an evaluated message would
    hand the model that message's answer. The SMS collection repeats many messages, so disjoint splits still share
    some texts; those are skipped.

    Args:
        examples: the frame to draw from (columns ``text``, ``label``), e.g. ``load_sms("calibration")``.
        shots: how many rows to draw.
        exclude: the evaluated frame (column ``text``).
        seed: seeds the draw and the order.

    Returns:
        The drawn rows of ``examples`` (their original index kept), shuffled so the last shot's label varies.

    Raises:
        TypeError: if ``shots`` is not an integer, or a message is not a string.
        ValueError: if ``shots`` is negative, ``examples`` is not a frame with columns ``text`` and ``label`` or has
            labels other than ham/spam, or too few messages of a label remain (as when ``examples`` is the evaluated
            frame).
    """
    check_int("shots", shots, minimum=0)
    _check_frame(examples, "examples")
    pool = examples[~examples["text"].isin(set(exclude["text"]))]
    rng = np.random.default_rng(seed)
    wanted = {"ham": shots - shots // 2, "spam": shots // 2}
    drawn = []
    for label, count in wanted.items():
        candidates = pool[pool["label"] == label]
        if len(candidates) < count:
            raise ValueError(
                f"{shots} shots need {count} {label} messages in examples that do not occur in the evaluated frame; "
                f"found {len(candidates)} ({len(examples) - len(pool)} of {len(examples)} examples overlap it). "
                "Draw shots from a disjoint split, e.g. load_sms('calibration') when evaluating on 'evaluation'."
            )
        drawn.append(candidates.iloc[np.sort(rng.choice(len(candidates), size=count, replace=False))])
    chosen = pd.concat(drawn)
    # Shuffled, so the label of the last shot (which models tend to repeat) is not always the same.
    return chosen.iloc[rng.permutation(len(chosen))]


def _shared_length(contexts: list[list[int]]) -> int:
    """How many leading tokens all contexts share, leaving each at least one token of its own to run.

    Found on the token ids of the full prompts rather than by tokenizing the shots text on its own, because the
    boundary tokenizes differently alone: SmolLM2 reads "\\n\\nMessage" as "\\n", "\\n", "Message" but a text ending
    in "\\n\\n" as one "\\n\\n" token. Splitting the ids keeps exactly the tokens the full prompt is scored on.
    """
    first, shared = contexts[0], min(len(context) for context in contexts) - 1
    for context in contexts[1:]:
        shared = next((k for k in range(shared) if context[k] != first[k]), shared)
    return shared


def _label_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    batch_size: int,
    progress: bool,
    reuse_prefix: bool,
) -> np.ndarray:
    """Log-likelihood of each label's continuation after each prompt, shape (n_prompts, n_labels).

    ``reuse_prefix``: run the tokens shared by all prompts once and reuse their KV cache (see the module docstring).
    """
    continuations = [tokenizer(" " + label, add_special_tokens=False)["input_ids"] for label in SMS_LABELS]
    contexts = [tokenizer(prompt)["input_ids"] for prompt in prompts]
    shared = _shared_length(contexts) if reuse_prefix else 0
    # A row holds a prompt's own tokens + continuation minus its last token (no logit is read after that one), so
    # when every label is a single token the rows of one prompt coincide and are computed once.
    requests, rows = [], {}
    for i, context in enumerate(contexts):
        own = context[shared:]
        for j, continuation in enumerate(continuations):
            row = tuple(own + continuation[:-1])
            requests.append((rows.setdefault(row, len(rows)), i, j, len(own) - 1, continuation))
    row_list = list(rows)
    order = sorted(range(len(row_list)), key=lambda r: len(row_list[r]))  # similar lengths share a batch
    pad_id = next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if t is not None)
    by_row: dict[int, list] = {}
    for request in requests:
        by_row.setdefault(request[0], []).append(request)

    device = input_device(model)
    scores = np.zeros((len(prompts), len(continuations)))
    with eval_mode(model), torch.inference_mode():
        prefix_cache = None
        if shared:
            prefix = torch.tensor([contexts[0][:shared]], device=device)
            # No prefix logit is read, so the head runs on one position only.
            prefix_cache = model(input_ids=prefix, use_cache=True, logits_to_keep=1)[cache_argument_name(model)]
        for start in progress_bar(range(0, len(order), batch_size), "sms", progress):
            batch = order[start : start + batch_size]
            padded = right_pad([row_list[r] for r in batch], pad_id)  # real tokens keep their positions
            # Logits at position p predict token p + 1: a continuation is read from its prompt's last token on, and
            # the head runs only there; ``kept`` numbers those positions in the order the logits come out.
            read = torch.zeros(padded["input_ids"].shape, dtype=torch.bool)
            for b, r in enumerate(batch):
                for _, _, _, first, continuation in by_row[r]:
                    read[b, first : first + len(continuation)] = True
            kept = torch.full(read.shape, -1)
            kept[read] = torch.arange(int(read.sum()))
            with head_only_at(model, read):
                logits = _forward(
                    model, padded["input_ids"].to(device), padded["attention_mask"].to(device), prefix_cache, shared
                )
            for b, r in enumerate(batch):
                for _, i, j, first, continuation in by_row[r]:
                    predicting = logits[kept[b, first : first + len(continuation)]]
                    scores[i, j] = -token_nll(predicting, torch.tensor(continuation)).sum().item()
    return scores


def _forward(
    model: PreTrainedModel, input_ids: torch.Tensor, mask: torch.Tensor, prefix_cache: Cache | None, shared: int
) -> torch.Tensor:
    """Logits of a right-padded batch, which continues the ``shared`` cached prefix tokens when a cache is given."""
    if prefix_cache is None:
        return model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
    n, width = input_ids.shape
    # A forward call appends to the cache it is given, so every batch gets its own copy, one row per message.
    cache = copy.deepcopy(prefix_cache)
    cache.batch_repeat_interleave(n)
    mask = torch.cat([mask.new_ones(n, shared), mask], dim=1)  # every row sees the whole prefix
    positions = torch.arange(shared, shared + width, device=input_ids.device).expand(n, -1)
    kwargs = {cache_argument_name(model): cache}
    return model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs).logits


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC from the Mann-Whitney U statistic (ties count one half); NaN without both classes."""
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    return float(stats.mannwhitneyu(positive, negative).statistic / (len(positive) * len(negative)))


def sms_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    frame: pd.DataFrame,
    *,
    shots: int = 0,
    examples: pd.DataFrame | None = None,
    max_examples: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    decision: Decision = "argmax",
    reuse_prefix: bool = True,
    progress: bool = True,
) -> ClassificationResult:
    """Zero- or few-shot accuracy of ``model`` on the SMS messages of ``frame``.

    The prediction is the label whose continuation (" ham" / " spam") is likelier after ``sms_prompt`` (ties go to
    ham). The shots are the same for every message and every model, so two models are compared on identical prompts.
    The model runs in eval mode (no dropout) and gets its own mode back afterwards.

    Args:
        model: the causal LM to evaluate.
        tokenizer: its tokenizer.
        frame: the messages (columns ``text``, ``label``), e.g. ``load_sms("evaluation")``.
        shots: how many solved messages from ``examples`` to put in front of every prompt (``draw_shots``); 0 for
            zero-shot.
        examples: the frame the shots (and the spam share for ``decision="prior"``) come from, e.g.
            ``load_sms("calibration")``.
        max_examples: evaluate the first rows of ``frame`` only; None evaluates all.
        batch_size: rows per forward pass.
        seed: seeds ``draw_shots``.
        decision: "argmax" (the likelier label), or "prior": spam for the ``round(share * n)`` messages with the
            largest spam-ham score difference, ``share`` being the spam share of ``examples`` (see the module
            docstring).
        reuse_prefix: run the shots once and reuse their KV cache for every message; False runs every full prompt
            (slower, same scores up to float rounding; kept to time and check the cached path).
        progress: show a progress bar.

    Returns:
        A ``ClassificationResult``.

    Raises:
        ValueError: if ``frame`` or ``examples`` is not a frame with columns ``text`` and ``label`` and labels
            ham/spam; ``shots > 0`` or ``decision="prior"`` without ``examples``; ``decision="prior"`` with empty
            ``examples``; ``decision`` is unknown; ``shots`` is negative or ``max_examples``/``batch_size`` below 1;
            nothing is left to evaluate; the model gives no next-token logits (``check_decoder``); or as
            ``draw_shots``.
        TypeError: if ``shots``, ``max_examples`` or ``batch_size`` is not an integer, ``decision`` not a string, or
            a message of ``frame`` or ``examples`` is not a string.
        FloatingPointError: if the label scores are NaN or inf (``raise_non_finite`` names where they start).
    """
    check_decoder(model, "logits")
    _check_frame(frame, "frame")
    check_int("shots", shots, minimum=0)
    if shots > 0 and examples is None:
        raise ValueError("few-shot prompts need examples to draw the shots from, e.g. examples=load_sms('calibration')")
    check_choice("decision", decision, DECISIONS)
    if decision == "prior" and examples is None:
        raise ValueError("decision='prior' needs examples to read the spam share from, e.g. load_sms('calibration')")
    if examples is not None:
        _check_frame(examples, "examples")
        if decision == "prior" and examples.empty:
            raise ValueError(
                "decision='prior' reads the spam share from examples, but examples has no rows; pass a "
                "labelled frame, e.g. load_sms('calibration')"
            )
    check_int("max_examples", max_examples, none_means="all rows")
    check_int("batch_size", batch_size)
    evaluated = frame if max_examples is None else frame.iloc[:max_examples]
    if evaluated.empty:
        raise ValueError("frame has no messages to evaluate")
    chosen = draw_shots(examples, shots, exclude=frame, seed=seed) if shots else frame.iloc[:0]

    prompts = [sms_prompt(text, chosen) for text in evaluated["text"]]
    values = _label_scores(model, tokenizer, prompts, batch_size, progress, reuse_prefix and shots > 0)
    broken = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if len(broken):  # NaN scores would give arbitrary predictions (prior) or fail inside pandas (argmax)
        prompt_ids = torch.tensor([tokenizer(prompts[broken[0]])["input_ids"]])
        raise_non_finite(model, {"input_ids": prompt_ids}, f"the label scores of {len(broken)} message(s)")
    scores = pd.DataFrame(values, index=evaluated.index, columns=list(SMS_LABELS))
    difference = (scores["spam"] - scores["ham"]).to_numpy()
    if decision == "argmax":
        predictions = scores.idxmax(axis=1).rename("prediction")  # idxmax takes the first column on a tie
    else:
        n_spam = round((examples["label"] == "spam").mean() * len(evaluated))
        spam = np.argsort(-difference, kind="stable")[:n_spam]  # ties: the earlier message first
        predictions = pd.Series("ham", index=evaluated.index, name="prediction")
        predictions.iloc[spam] = "spam"
    is_spam = (evaluated["label"] == "spam").to_numpy()
    correct = (predictions == evaluated["label"]).to_numpy()
    counts = evaluated["label"].value_counts()
    return ClassificationResult(
        accuracy=float(correct.mean()),
        correct=correct,
        predictions=predictions,
        scores=scores,
        baseline=float(counts.max() / len(evaluated)),
        majority_label=str(counts.idxmax()),
        auc=_auc(difference[is_spam], difference[~is_spam]),
        shots=chosen.reset_index(drop=True),
        messages=evaluated[["text", "label"]].copy(),
    )


def _correct(result: ClassificationResult | np.ndarray) -> np.ndarray:
    """The bootstrap's units: 1.0 per correctly classified message, else 0.0."""
    return np.asarray(result.correct if isinstance(result, ClassificationResult) else result, dtype=float)


def accuracy_ci(result: ClassificationResult | np.ndarray, **bootstrap: object) -> ConfidenceInterval:
    """Bootstrap interval of an accuracy, resampling messages.

    Args:
        result: a ``ClassificationResult``, or a boolean array of correct answers.
        **bootstrap: keyword arguments of ``bootstrap_ci`` (``n_boot``, ``confidence``, ``seed``).

    Returns:
        The accuracy with its interval.

    Raises:
        TypeError, ValueError: as ``bootstrap_ci``, for its arguments (a ValueError also for no message).
    """
    return bootstrap_ci(_correct(result), **bootstrap)


def accuracy_difference(
    a: ClassificationResult | np.ndarray, b: ClassificationResult | np.ndarray, **bootstrap: object
) -> ConfidenceInterval:
    """Paired interval of accuracy(b) − accuracy(a) for two models evaluated on the same messages.

    Args:
        a: the first model's ``ClassificationResult`` (the one subtracted), or its boolean array of correct answers.
        b: the second model's, likewise.
        **bootstrap: keyword arguments of ``paired_difference`` (``n_boot``, ``confidence``, ``seed``).

    Returns:
        The difference with its interval; above 0 means ``b`` is more accurate.

    Raises:
        ValueError: if two results cover different messages, or the two arrays differ in shape; as
            ``paired_difference``, for its arguments.
        TypeError: as ``paired_difference``, for its arguments.
    """
    both = isinstance(a, ClassificationResult) and isinstance(b, ClassificationResult)
    if both and not a.messages.equals(b.messages):
        raise ValueError("the two results cover different messages; evaluate both models on the same frame")
    return paired_difference(_correct(a), _correct(b), **bootstrap)
