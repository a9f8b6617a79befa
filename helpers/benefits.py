"""What depth pruning buys: fewer parameters and bytes, and faster prefill and decoding.

Three views of the gain. Counts (``parameter_count``, ``model_bytes``) are exact. ``ideal_speedup`` is what the
removed share of per-token multiply-accumulates promises. ``time_variants`` is what a machine delivers, timing all
variants interleaved, with the spread of the repetitions; at batch size 1 decoding is bound by weight reads and
per-call overheads, so it can beat or miss that ideal. ``speedup_spread`` reads measured speedups against the spread,
and ``check_decode_physics`` checks them against what physics allows (between 1 and N / (N - k) for k of N blocks
removed) before reading them against the ideal.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.stats import linregress
from torch.ao.nn.quantized.modules.linear import LinearPackedParams
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .blocks import check_block_indices, check_decoder, get_blocks
from .checks import check_int, check_mapping
from .display import fmt, fmt_interval, fmt_pct
from .generation import cache_argument_name
from .hooks import check_positions, eval_mode, input_device
from .pruning import decoder_config, skip_blocks
from .settings import progress_bar

LATENCY_TEXT = (
    "Depth pruning removes whole transformer blocks from a language model. Each block holds an attention layer and "
    "a feed-forward layer, so every removed block saves memory and time for every token the model reads or writes. "
)
"""Repeated and cut to ``prompt_tokens`` tokens: the same prompt on every run and every machine."""
QUARTILES = (25, 75)
"""Percentiles of the repetitions that ``time_variants`` reports as the spread (the interquartile range)."""


def _unique(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Tensors with distinct storage: tied weights (one tensor under two names, or two views of one memory) once."""
    seen = {}
    for t in tensors:
        seen.setdefault((t.device, t.data_ptr(), t.numel(), t.dtype) if t.data_ptr() else id(t), t)
    return list(seen.values())


def _packed(model: torch.nn.Module) -> tuple[int, int]:
    """(values, bytes) of the weights and biases that dynamically quantized layers keep packed outside
    ``parameters()`` (``torch.ao.quantization.quantize_dynamic``): weights in the quantized dtype (1 byte per int8
    value), biases in their own; the few bytes of each layer's scale and zero point are left out."""
    values = size = 0
    for module in model.modules():
        if isinstance(module, LinearPackedParams):
            weight, bias = module._weight_bias()
            values += weight.numel()
            size += weight.numel() * torch.empty(0, dtype=module.dtype).element_size()  # qint8 unpacks as is, fp16 not
            if bias is not None:
                values += bias.numel()
                size += bias.numel() * bias.element_size()
    return values, size


def parameter_count(model: torch.nn.Module) -> int:
    """Number of parameters, counting tied weights (SmolLM2's embedding = LM head) once.

    On a whole model this is ``PreTrainedModel.num_parameters()``; it is written here because it also counts any
    module (a block list), two views of one storage once (the tests check both against transformers), and the
    weights that dynamically quantized layers keep packed outside ``parameters()``.

    Args:
        model: any torch module (a whole model, or its block list).

    Returns:
        The number of parameter values, each shared storage counted once.
    """
    return sum(p.numel() for p in _unique(model.parameters())) + _packed(model)[0]


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers (e.g. rotary tables), each storage counted once: on a whole model
    ``PreTrainedModel.get_memory_footprint()`` (checked against it in the tests). Weights that dynamically quantized
    layers keep packed count in their quantized dtype (1 byte per int8 value).

    Args:
        model: any torch module.

    Returns:
        The bytes its parameters and buffers occupy, in their own dtypes.
    """
    stored = sum(t.numel() * t.element_size() for t in _unique([*model.parameters(), *model.buffers()]))
    return stored + _packed(model)[1]


def size_summary(model: PreTrainedModel) -> pd.Series:
    """Blocks, parameters (all, in blocks, elsewhere) and size in bytes and MiB of a model, as one Series.

    Args:
        model: a transformers model.

    Returns:
        A Series named "size" (dtype object, so the counts stay integers) with ``blocks``, ``parameters``,
        ``block_parameters``, ``other_parameters``, ``bytes`` and ``MiB``.

    Raises:
        ValueError: if the model's block list cannot be found (``get_blocks``).
    """
    n_params = parameter_count(model)
    in_blocks = parameter_count(get_blocks(model))
    size = model_bytes(model)
    return pd.Series(
        {
            "blocks": len(get_blocks(model)),
            "parameters": n_params,
            "block_parameters": in_blocks,
            "other_parameters": n_params - in_blocks,
            "bytes": size,
            "MiB": size / 2**20,
        },
        name="size",
        dtype=object,  # counts stay integers next to the MiB figure
    )


def _per_token_compute(model: PreTrainedModel, seq_len: int | None) -> tuple[list[float], float]:
    """(multiply-accumulates per token of each block, of everything else) — see ``ideal_speedup``."""
    lookups = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    head = model.get_output_embeddings().weight
    in_parameters = sum(p.numel() for p in model.parameters() if id(p) not in lookups)
    outside = in_parameters + _packed(model)[0] - parameter_count(get_blocks(model))
    if id(head) in lookups:  # tied: the head's matmul is real work although its weight is the embedding table
        outside += head.numel()
    attention = 0.0
    if seq_len is not None:
        config = decoder_config(model)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        attention = 2 * seq_len * config.num_attention_heads * head_dim  # q·K and softmax·V over seq_len keys
    return [parameter_count(block) + attention for block in get_blocks(model)], float(outside)


def ideal_speedup(model: PreTrainedModel, removed_blocks: Iterable[int], *, seq_len: int | None = None) -> float:
    """Speedup promised by removing ``removed_blocks``: 1 / (1 - their share of the per-token compute).

    Compute per token is counted in multiply-accumulates: one per weight of every matrix the token passes through,
    i.e. each block's parameter count plus everything outside the blocks except embedding lookups (free), with the
    LM head's matmul counted even when its weight is tied to the embedding. ``seq_len`` adds attention's own work
    per block at that context length (2 · seq_len · heads · head_dim; sliding windows are ignored); ``None`` leaves
    it out, which is close for short contexts. Per-block overheads (kernel launches, norms) are not modelled.

    Args:
        model: the full model.
        removed_blocks: 0-based indices of the blocks removed; empty gives 1.0.
        seq_len: context length for attention's term; None leaves it out.

    Returns:
        The ideal speedup, 1.0 or more.

    Raises:
        TypeError: if ``seq_len`` is neither an integer nor None, or ``removed_blocks`` is a string or holds
            something other than an integer (``check_block_indices``).
        ValueError: if ``seq_len`` is below 1; for invalid ``removed_blocks`` (``check_block_indices``: out of range,
            duplicates, every block); if the block list cannot be found (``get_blocks``).
    """
    check_int("seq_len", seq_len, none_means="leaving attention's term out")
    per_block, outside = _per_token_compute(model, seq_len)
    removed = check_block_indices(removed_blocks, len(per_block), allow_empty=True)
    share = sum(per_block[i] for i in removed) / (sum(per_block) + outside)
    return 1.0 / (1.0 - share)


WINDOWED_LAYERS = {"sliding_attention": "sliding_window", "chunked_attention": "attention_chunk_size"}
"""Layer types whose KV cache keeps only a window of tokens, and the config attribute that sets the window."""


def _cached_layer_types(config: object, n_blocks: int) -> list[str]:
    """Each layer's attention type: ``config.layer_types`` if the family has it, else transformers' rule (every layer
    slides when the config sets ``sliding_window``, is chunked with ``attention_chunk_size``, else full attention)."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return list(layer_types)
    kind = next(
        (kind for kind, window in WINDOWED_LAYERS.items() if getattr(config, window, None) is not None),
        "full_attention",
    )
    return [kind] * n_blocks


def kv_cache_bytes(model: PreTrainedModel, context_tokens: int) -> pd.Series:
    """Bytes of keys and values each block holds in the KV cache after ``context_tokens`` tokens of one sequence.

    As transformers' ``DynamicCache`` keeps them: a full-attention layer caches every token, a sliding-window layer
    (Gemma 2/3, Mistral, Qwen with sliding windows...) only its last ``sliding_window - 1`` tokens. So the cache is
    not "blocks x bytes per block" when the layer types are mixed, and removing a sliding-window block frees less
    cache than removing a global one. Keys and values are stored in the model's dtype.

    Args:
        model: a transformers model.
        context_tokens: how many tokens of the one sequence are in context.

    Returns:
        A Series named "kv_cache_bytes", indexed by ``block`` (0..L-1): the cache bytes of each block.

    Raises:
        TypeError: if ``context_tokens`` is not an integer.
        ValueError: if ``context_tokens`` is below 1, a block's layer type is neither full attention nor one of
            ``WINDOWED_LAYERS``, or the block list cannot be found (``get_blocks``).
    """
    check_int("context_tokens", context_tokens)
    config = decoder_config(model)
    blocks = get_blocks(model)
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * kv_heads * head_dim * next(blocks.parameters()).element_size()  # K and V
    tokens = []
    for index, kind in enumerate(_cached_layer_types(config, len(blocks))):
        if kind == "full_attention":
            tokens.append(context_tokens)
        elif kind in WINDOWED_LAYERS:
            tokens.append(min(context_tokens, getattr(config, WINDOWED_LAYERS[kind]) - 1))
        else:
            raise ValueError(f"block {index} is a {kind!r} layer, whose cache kv_cache_bytes does not model")
    return pd.Series(
        [per_token * t for t in tokens], index=pd.RangeIndex(len(blocks), name="block"), name="kv_cache_bytes"
    )


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def latency_prompt(tokenizer: PreTrainedTokenizerBase, prompt_tokens: int, batch_size: int = 1) -> torch.Tensor:
    """The fixed benchmark prompt: ``LATENCY_TEXT`` repeated, cut to ``prompt_tokens`` ids, one row per sequence.

    Args:
        tokenizer: the model's tokenizer (no special tokens are added).
        prompt_tokens: the prompt's length in tokens.
        batch_size: how many identical rows.

    Returns:
        A long tensor of token ids, shape (batch_size, prompt_tokens).

    Raises:
        ValueError: if the tokenizer turns ``LATENCY_TEXT`` into no tokens.
    """
    ids = tokenizer(LATENCY_TEXT, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError("the tokenizer turns the benchmark text into no tokens")
    row = (ids * (prompt_tokens // len(ids) + 1))[:prompt_tokens]
    return torch.tensor([row] * batch_size, dtype=torch.long)


def greedy_decode(model: PreTrainedModel, prompt: torch.Tensor, new_tokens: int) -> tuple[torch.Tensor, float, float]:
    """Greedy decoding with the KV cache for exactly ``new_tokens`` tokens (EOS does not stop it).

    Prefill = one forward over the prompt that fills the cache and gives the first token (time to first token);
    decode = the ``new_tokens - 1`` one-token steps after it. A plain loop rather than ``generate()``, so only the
    model is timed. The model runs in eval mode (no dropout) and gets its own mode back afterwards.

    Args:
        model: the causal LM.
        prompt: token ids, shape (batch, prompt length); moved to the model's input device.
        new_tokens: how many tokens to generate.

    Returns:
        (generated ids of shape (batch, new_tokens), prefill seconds, decode seconds).

    Raises:
        ValueError: if the prompt and the new tokens together are longer than the model's positions, or for a model
            that gives no next-token logits (``check_decoder``).
    """
    check_decoder(model, "logits")
    check_positions(
        model, prompt.shape[1] + new_tokens, f"the prompt's {prompt.shape[1]} tokens + {new_tokens} new tokens"
    )
    device = input_device(model)
    prompt = prompt.to(device)
    cache = cache_argument_name(model)
    with eval_mode(model), torch.inference_mode():
        _synchronize(device)
        start = time.perf_counter()
        out = model(input_ids=prompt, use_cache=True)
        token = out.logits[:, -1].argmax(dim=-1, keepdim=True)
        _synchronize(device)
        prefilled = time.perf_counter()
        generated = [token]
        for _ in range(new_tokens - 1):
            out = model(input_ids=token, **{cache: out[cache]}, use_cache=True)
            token = out.logits[:, -1].argmax(dim=-1, keepdim=True)
            generated.append(token)
        _synchronize(device)
        done = time.perf_counter()
    return torch.cat(generated, dim=1), prefilled - start, done - prefilled


def _median_and_quartiles(name: str, values: Sequence[float]) -> dict[str, float]:
    """``{name: median, name_q25: 25th percentile, name_q75: 75th}`` (numpy's linear interpolation)."""
    low, high = np.percentile(values, QUARTILES)
    return {
        name: float(np.median(values)),
        f"{name}_q{QUARTILES[0]}": float(low),
        f"{name}_q{QUARTILES[1]}": float(high),
    }


def _round_robin(names: Sequence[str], passes: int) -> list[list[str]]:
    """The order ``time_variants`` runs ``names`` in: pass ``p`` starts at name ``p`` (mod their number) and wraps
    round, so each variant is timed once per pass, as often first as last, and never always right after the same
    one. Drifting machine load (another process, a CPU warming up) then slows every variant alike.

    Args:
        names: the variants, in their given order.
        passes: how many passes over all of them.

    Returns:
        One list of names per pass.
    """
    return [[*names[p % len(names) :], *names[: p % len(names)]] for p in range(passes)]


def time_variants(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    variants: Mapping[str, Iterable[int]],
    *,
    prompt_tokens: int = 128,
    new_tokens: int = 32,
    repetitions: int = 5,
    warmup: int = 1,
    batch_size: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Prefill latency and decoding speed of every variant, timed interleaved (round-robin): medians and spread.

    Timing one variant after another lets the machine's load drift between them (a process starting, the CPU
    throttling), and the drift then passes for a difference between the variants. Here every pass over the
    variants (``_round_robin``: a rotated order each pass) times each variant once on the fixed prompt
    (``latency_prompt``) with ``greedy_decode``, on the one model inside ``skip_blocks`` (no copies). ``warmup``
    untimed passes come first (they pay for allocations and kernel selection). ``prefill_ms`` = time to first
    token; ``decode_ms_per_token`` = the one-token steps after it, per step; ``decode_tokens_per_s`` = generated
    tokens per second over all ``batch_size`` sequences. Medians resist a stray slow run; the 25th and 75th
    percentiles of the repetitions (``_q25``, ``_q75``: the interquartile range) show how much the runs spread.

    Args:
        model: the full causal LM; restored after each run.
        tokenizer: its tokenizer.
        variants: ``{name: blocks to remove}``, e.g. ``{"full": [], "-10%": [24, 25, 26]}``.
        prompt_tokens: the prompt's length in tokens.
        new_tokens: tokens generated per run, at least 2 (the first one comes from the prefill).
        repetitions: timed runs per variant.
        warmup: untimed passes over all variants before them.
        batch_size: sequences decoded together.
        progress: show a progress bar over the runs.

    Returns:
        A frame indexed by ``variant`` with ``prefill_ms``, ``prefill_ms_q25``, ``prefill_ms_q75``,
        ``decode_ms_per_token``, ``decode_ms_per_token_q25``, ``decode_ms_per_token_q75`` and
        ``decode_tokens_per_s`` (from the median decode time).

    Raises:
        TypeError: if an option is not an integer, ``variants`` is not a mapping, or its block indices are not
            integers (``check_block_indices``).
        ValueError: if an option is below its minimum (``new_tokens`` 2, ``warmup`` 0, the others 1), ``variants``
            is empty or holds invalid block indices, the model gives no next-token logits (``check_decoder``), the
            tokenizer turns the benchmark text into no tokens, or ``prompt_tokens + new_tokens`` exceeds the model's
            positions (``greedy_decode``).
    """
    for name, value, least in (
        ("prompt_tokens", prompt_tokens, 1),
        ("new_tokens", new_tokens, 2),
        ("repetitions", repetitions, 1),
        ("warmup", warmup, 0),
        ("batch_size", batch_size, 1),
    ):
        check_int(name, value, minimum=least)
    check_mapping("variants", variants, "{name: blocks to remove}")
    if not variants:
        raise ValueError("variants is empty: give at least one, e.g. {'full': []}")
    check_decoder(model, "logits")
    n_blocks = len(get_blocks(model))
    plan = {name: check_block_indices(removed, n_blocks, allow_empty=True) for name, removed in variants.items()}
    prompt = latency_prompt(tokenizer, prompt_tokens, batch_size)
    runs = [(p, name) for p, order in enumerate(_round_robin(list(plan), warmup + repetitions)) for name in order]
    label = f"timing {len(plan)} models x {repetitions} runs, round-robin (after {warmup} warm-up pass)"
    prefill_ms: dict[str, list[float]] = {name: [] for name in plan}
    decode_ms: dict[str, list[float]] = {name: [] for name in plan}
    for p, name in progress_bar(runs, label, progress):
        with skip_blocks(model, plan[name]) as variant:
            _, prefill_s, decode_s = greedy_decode(variant, prompt, new_tokens)
        if p >= warmup:
            prefill_ms[name].append(1000 * prefill_s)
            decode_ms[name].append(1000 * decode_s / (new_tokens - 1))
    rows = {}
    for name in plan:
        decode = _median_and_quartiles("decode_ms_per_token", decode_ms[name])
        rows[name] = {
            **_median_and_quartiles("prefill_ms", prefill_ms[name]),
            **decode,
            "decode_tokens_per_s": 1000 * batch_size / decode["decode_ms_per_token"],
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")


def speedup_spread(
    table: pd.DataFrame,
    *,
    metric: str = "decode_ms_per_token",
    baseline: str = "full",
) -> pd.DataFrame:
    """Each variant's speedup over ``baseline`` on a timed ``metric``, the range its repetitions allow, and a verdict.

    A speedup is the baseline's time over the variant's (medians). Its range pairs opposite quartiles of the
    repetitions: from the baseline's 25th percentile over the variant's 75th (the variant's slow runs against the
    baseline's fast ones) to the baseline's 75th over the variant's 25th. The variant is "faster" when the whole
    range lies above 1 (its interquartile range lies below the baseline's), "slower" when it lies below 1, and
    "within the spread" when the two interquartile ranges overlap, even only at an end.

    Args:
        table: one row per variant, with ``metric`` and its ``_q25`` / ``_q75`` columns (``time_variants``' columns,
            as ``benefits_table`` lays them out).
        metric: the timed column, in time units (lower = faster).
        baseline: the row the others are compared with.

    Returns:
        A frame indexed like ``table`` without the baseline row: ``speedup``, ``speedup_low``, ``speedup_high`` and
        ``vs_baseline``.

    Raises:
        KeyError: if ``baseline`` is not a row, or a needed column is missing.
        ValueError: if a time or quartile is not positive.
    """
    low_column, high_column = (f"{metric}_q{q}" for q in QUARTILES)
    times = table[[metric, low_column, high_column]].astype(float)
    if not (times.to_numpy() > 0).all():
        raise ValueError(f"{metric} and its quartiles must be positive times, got\n{times}")
    base = times.loc[baseline]
    variants = times.drop(index=baseline)
    spread = pd.DataFrame(
        {
            "speedup": base[metric] / variants[metric],
            "speedup_low": base[low_column] / variants[high_column],
            "speedup_high": base[high_column] / variants[low_column],
        }
    )
    spread["vs_baseline"] = [
        _read_range(low, high, 1.0, ("faster", "slower", "within the spread"))
        for low, high in zip(spread["speedup_low"], spread["speedup_high"])
    ]
    return spread


def _read_range(low: float, high: float, level: float, words: tuple[str, str, str]) -> str:
    """``words`` = (above, below, containing): where the range [low, high] lies against ``level``."""
    if low > level:
        return words[0]
    if high < level:
        return words[1]
    return words[2]


FIT_STANDARD_ERRORS = 2.0
"""How many standard errors below zero the fitted fixed cost of a decode step may lie before ``check_decode_physics``
calls the timings bad (two: about 95% confidence for a straight-line fit)."""


@dataclass(frozen=True)
class DecodePhysics:
    """What ``check_decode_physics`` found: per variant its speedup and bounds, the straight-line fit, the problems.

    Attributes:
        variants: per variant (the baseline left out) ``speedup``, ``speedup_low``, ``speedup_high`` and
            ``vs_baseline`` (``speedup_spread``), ``ideal_speedup`` (the MAC ideal), ``hard_bound`` (N / (N - k))
            and ``reading``: "below the MAC ideal", "MAC ideal within the spread", "above the MAC ideal: per-block
            overheads", or "bad: ..." when it breaks a bound.
        per_block_ms: the fitted time of one block per decode step (NaN with fewer than two depths).
        fixed_ms: the fitted time per decode step that no block removal touches (NaN likewise).
        fixed_ms_se: the standard error of ``fixed_ms`` (NaN with fewer than three depths: a line through two points
            has none).
        problems: why the timings are bad, one sentence each; empty when they are consistent.
        reading: the fit, and what it says about where the time goes, in sentences.
    """

    variants: pd.DataFrame
    per_block_ms: float
    fixed_ms: float
    fixed_ms_se: float
    problems: tuple[str, ...]
    reading: str

    @property
    def consistent(self) -> bool:
        """True when no speedup breaks a bound and the fixed cost is not below zero beyond its uncertainty."""
        return not self.problems

    @property
    def verdict(self) -> str:
        """The overall verdict: 'consistent', or 'bad measurement: ' and the problems."""
        return "consistent" if self.consistent else "bad measurement: " + "; ".join(self.problems)


def check_decode_physics(
    table: pd.DataFrame,
    head_share: float,
    *,
    baseline: str = "full",
    metric: str = "decode_ms_per_token",
    blocks: str = "blocks_left",
    ideal: str = "ideal_speedup",
) -> DecodePhysics:
    """Check timed decode steps against what physics allows, and read them against the MAC ideal.

    A decode step costs ``fixed + per_block x blocks``: ``fixed`` (LM head, embedding, Python and launches per
    call) is at least 0, and every block of one model costs the same. Removing k of N blocks therefore speeds a step
    up by at most N / (N - k) (reached only when ``fixed`` is 0), and by at least 1. The MAC ideal
    (``ideal_speedup``) assumes time proportional to multiply-accumulates, i.e. a fixed part equal to the LM head's
    share; a measured speedup above it but under N / (N - k) is physics: each block costs more than its MACs
    (per-block overheads: norms, kernel launches, cache updates). Bad measurements (drift, warm-up, another
    process) are what physics forbids: a variant whose speedup range (``speedup_spread``: opposite quartiles) lies
    wholly above N / (N - k) or below 1, or a least-squares line through the median steps whose fixed part lies
    more than ``FIT_STANDARD_ERRORS`` standard errors below 0.

    Args:
        table: one row per variant with ``metric`` and its ``_q25`` / ``_q75`` columns, ``blocks`` and ``ideal``
            (``benefits_table`` with a tokenizer).
        head_share: the LM head's share of the full model's per-token multiply-accumulates, in (0, 1).
        baseline: the full model's row.
        metric: the column of median step times in ms.
        blocks: the column of blocks left.
        ideal: the column of MAC-ideal speedups.

    Returns:
        A ``DecodePhysics``.

    Raises:
        KeyError: if ``baseline`` or a column is missing.
        ValueError: if ``head_share`` is not in (0, 1), or a time or quartile is not positive (``speedup_spread``).
    """
    if not 0 < head_share < 1:
        raise ValueError(f"head_share must be a share in (0, 1), got {head_share}")
    variants = speedup_spread(table, metric=metric, baseline=baseline)
    n_blocks = int(table.loc[baseline, blocks])
    left = table.loc[variants.index, blocks].astype(int)
    variants["ideal_speedup"] = table.loc[variants.index, ideal].astype(float)
    variants["hard_bound"] = n_blocks / left
    problems, readings = [], []
    for name, row in variants.iterrows():
        speed = f"{name} decodes {fmt(row['speedup'])}x {fmt_interval(row['speedup_low'], row['speedup_high'])}"
        if row["speedup_low"] > row["hard_bound"]:
            readings.append("bad: above the hard bound")
            problems.append(f"{speed}, above its hard bound {n_blocks}/{left[name]} = {fmt(row['hard_bound'])}x")
        elif row["speedup_high"] < 1:
            readings.append("bad: slower than the full model")
            problems.append(f"{speed}: slower than the full model, though it does less work")
        else:
            readings.append(
                _read_range(
                    row["speedup_low"],
                    row["speedup_high"],
                    row["ideal_speedup"],
                    ("above the MAC ideal: per-block overheads", "below the MAC ideal", "MAC ideal within the spread"),
                )
            )
    variants["reading"] = readings

    depths = table[blocks].astype(float)
    if depths.nunique() < 2:
        reading = "Only one depth was timed: no line can be fitted through the decode steps."
        return DecodePhysics(variants, float("nan"), float("nan"), float("nan"), tuple(problems), reading)
    fit = linregress(depths, table[metric].astype(float))
    per_block, fixed = float(fit.slope), float(fit.intercept)
    fixed_se = float(fit.intercept_stderr) if depths.nunique() > 2 else float("nan")
    margin = FIT_STANDARD_ERRORS * fixed_se if fixed_se == fixed_se else 0.0  # NaN: a line through two points
    error = f" (± {fmt(margin)} ms, {FIT_STANDARD_ERRORS:g} standard errors)" if margin else ""
    plus = f"+ {fmt(fixed)}" if fmt(fixed)[0] != "-" else f"− {fmt(-fixed)}"  # never "+ -39.8"
    line = f"Straight-line fit of the decode step: {fmt(per_block)} ms per block {plus} ms per token "
    line += f"whatever the depth{error}. "
    if fixed + margin < 0:
        problems.append(
            f"the fitted fixed cost is {fmt(fixed)} ms per token, more than {FIT_STANDARD_ERRORS:g} standard "
            "errors below 0, which no machine can do"
        )
    if problems:
        reading = line + (
            "These timings break physics, so they say nothing about the model: re-measure on a quiet machine "
            "(close other programs, raise REPETITIONS)."
        )
        return DecodePhysics(variants, per_block, fixed, fixed_se, tuple(problems), reading)
    step = float(table.loc[baseline, metric])
    reading = line + (
        f"The LM head does {fmt_pct(head_share, decimals=0)} of the per-token multiply-accumulates: the MAC ideal "
        f"expects that share of the full model's {fmt(step)} ms step, {fmt(head_share * step)} ms, whatever the "
        f"depth; the fit finds {fmt(fixed)} ms ({fmt_pct(fixed / step, decimals=0)}). "
    )
    if fixed + margin < head_share * step:
        reading += (
            "The fixed part is the smaller: each block costs more time than its multiply-accumulates suggest "
            "(per-block overheads: norms, kernel launches, cache updates), so speedups above the MAC ideal, up to "
            "the hard bound, are physics."
        )
    elif fixed - margin > head_share * step:
        reading += (
            "The fixed part is the larger: every token pays more outside the blocks than the head's "
            "multiply-accumulates account for (the embedding lookup, picking the token, Python and launches per "
            "forward call), so speedups below the MAC ideal are physics."
        )
    else:
        reading += (
            f"Within {FIT_STANDARD_ERRORS:g} standard errors the fixed part may be smaller or larger than that: "
            "these timings cannot tell per-block from per-token overheads (more REPETITIONS, a quieter machine)."
        )
    return DecodePhysics(variants, per_block, fixed, fixed_se, (), reading)
