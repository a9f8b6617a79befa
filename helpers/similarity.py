"""How much each block changes the hidden state: cosine similarity, Block Influence and angular distance.

A block whose output points in nearly the same direction as its input (cosine near 1) changes little, so it is a
candidate for removal. ShortGPT (Men et al., 2024) scores blocks by Block Influence BI = 1 - E[cos(in, out)] over
all tokens; Gromov et al. (2024) compare the last token's states ``n`` blocks apart with the angular distance
arccos(cos)/pi and drop the ``n`` consecutive blocks whose ends are closest.

``block_similarity`` computes all of this in ONE forward pass per batch. The hooks only copy each block's output
into a per-batch buffer laid out (token, depth, hidden); after the pass one batched matrix product gives, for every
token, the dot products between its states at all depths, whose diagonal holds the squared norms: that is every
depth-to-depth cosine of every token at once. Running sums and counts make every mean token-weighted over all
batches, and no activation outlives its batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .blocks import get_blocks
from .hooks import block_hooks, run_model
from .settings import progress_bar
from .ties import first_minimum


@dataclass(frozen=True)
class SimilarityReport:
    """Similarity statistics of one model on a set of batches (see ``block_similarity``).

    ``blocks``: one row per block (index ``block``): ``cosine`` (mean cos(input, output) over all real tokens),
    ``block_influence`` (1 - cosine, ShortGPT), ``cosine_last`` / ``block_influence_last`` (the same over the last
    real token of each sequence), ``tokens`` and ``sequences`` (how many were averaged).
    ``depth_similarity``: (L+1) x (L+1) mean cosine between the hidden states at two depths (index and columns
    ``depth``; depth 0 = input of block 0 = embedding output, depth d = output of block d-1, the last one taken
    BEFORE the final norm), token-weighted over real tokens.
    ``angular_distance``: Gromov et al.'s d(l, l+n) = arccos(cos)/pi between the last-token states at depths l and
    l+n, averaged over sequences (index ``start`` l, columns ``n`` = blocks spanned; NaN where l+n > L).
    ``best_start``: for each ``n``, the start l with the smallest angular distance (drop blocks l..l+n-1); near-ties
    (``ties.TIE_RTOL``) go to the earlier start.
    ``token_cosine``: cos(input, output) at each real token of one sample (index ``position``, ``token``;
    columns = blocks).
    """

    blocks: pd.DataFrame
    depth_similarity: pd.DataFrame
    angular_distance: pd.DataFrame
    best_start: pd.Series
    token_cosine: pd.DataFrame


class _Sums:
    """Running sums over batches, float64 on the CPU; the reported means are their ratios (token-weighted)."""

    def __init__(self, n_depths: int):
        self.cosine = torch.zeros(n_depths, n_depths, dtype=torch.float64)  # over real tokens: cos(depth i, depth j)
        self.cosine_last = torch.zeros(n_depths, n_depths, dtype=torch.float64)  # over sequences, last real token
        self.angular = torch.zeros(n_depths, n_depths, dtype=torch.float64)  # arccos(cos)/pi of the same
        self.tokens = 0
        self.sequences = 0


def _check_batches(batches: Iterable[Mapping[str, torch.Tensor]], sample: tuple[int, int]) -> list[dict]:
    """The batches as dicts with an ``attention_mask`` (all ones when missing).

    TypeError for one dict instead of a list or a batch that is not a dict; ValueError on anything else unusable.
    """
    if isinstance(batches, Mapping):
        raise TypeError("batches must be a list of batches (dicts with input_ids), not one batch; wrap it: [batch]")
    checked = []
    for number, batch in enumerate(batches):
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"batch {number} is a {type(batch).__name__}, not a dict with an 'input_ids' tensor (as "
                "tokenize_batches returns)"
            )
        if not isinstance(batch.get("input_ids"), torch.Tensor):
            raise ValueError(f"batch {number} has no 'input_ids' tensor (as tokenize_batches returns)")
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        if ids.dim() != 2 or mask.shape != ids.shape:
            raise ValueError(
                f"batch {number}: input_ids must be (batch, length) and attention_mask the same shape; "
                f"got {tuple(ids.shape)} and {tuple(mask.shape)}"
            )
        if not bool((mask.sum(dim=1) > 0).all()):
            raise ValueError(f"batch {number} has a row with no real token (attention_mask all zero); drop that row")
        checked.append({**batch, "attention_mask": mask})
    if not checked:
        raise ValueError("batches is empty; pass at least one batch (e.g. from helpers.data.calibration_batches)")
    b, row = sample
    if not (0 <= b < len(checked) and 0 <= row < len(checked[b]["input_ids"])):
        raise ValueError(
            f"sample={sample!r} does not exist: it is (batch index, row in that batch); there are {len(checked)} "
            f"batches, the first with {len(checked[0]['input_ids'])} rows"
        )
    return checked


def _raise_if_not_finite(self_cosine: torch.Tensor, batch_number: int) -> None:
    """``self_cosine`` (real tokens, depth) is 1 everywhere unless a state is zero or not finite there (then NaN)."""
    bad = [d for d, ok in enumerate(torch.isfinite(self_cosine).all(dim=0).tolist()) if not ok]
    if not bad:
        return
    where = "the embedding output (input of block 0)" if bad[0] == 0 else f"the output of block {bad[0] - 1}"
    undefined = sorted({b for d in bad for b in (d - 1, d) if 0 <= b < self_cosine.shape[1] - 1})
    raise ValueError(
        f"batch {batch_number}: {where} is zero or not finite at some real token, so the cosine similarity of "
        f"block(s) {undefined} is undefined (NaN). It is not replaced by 0 (that would make a block look the most "
        f"removable); check the model's weights and dtype (float16 can overflow; use float32 or bfloat16)."
    )


class _DepthStates:
    """One batch's hidden states at every depth, in a float32 buffer laid out (position, depth, hidden).

    Each hook makes a single copy of its block's output into the buffer (converting to float32 on the way): the
    least work a hook can do, as the forward pass frees that tensor soon after. The buffer lives on the device of
    block 0's input and is reused across batches. Under a ``device_map`` a state on another device is cloned there
    and copied over once per batch in ``gather``, so a hook never moves data between devices.
    """

    def __init__(self, n_depths: int):
        self.n_depths = n_depths
        self._storage: torch.Tensor | None = None

    def start(self, n_positions: int) -> None:
        self.n_positions = n_positions
        self._buffer: torch.Tensor | None = None
        self._elsewhere: dict[int, torch.Tensor] = {}

    def add(self, depth: int, state: torch.Tensor) -> None:
        flat = state.detach().reshape(-1, state.shape[-1])
        if len(flat) != self.n_positions:
            raise ValueError(
                f"a block's hidden state has shape {tuple(state.shape)}, which does not hold one vector per position "
                f"of the batch ({self.n_positions}); block_similarity expects (batch, length, hidden) states"
            )
        if self._buffer is None:
            self._buffer = self._allocate(flat.shape[-1], flat.device)
        if flat.device == self._buffer.device:
            self._buffer[:, depth].copy_(flat)
        else:
            self._elsewhere[depth] = flat.clone()

    def gather(self) -> torch.Tensor:
        for depth, flat in self._elsewhere.items():
            self._buffer[:, depth].copy_(flat)
        self._elsewhere.clear()
        return self._buffer

    def _allocate(self, hidden: int, device: torch.device) -> torch.Tensor:
        size = self.n_positions * self.n_depths * hidden
        if self._storage is None or self._storage.device != device or self._storage.numel() < size:
            self._storage = torch.empty(size, dtype=torch.float32, device=device)
        return self._storage[:size].view(self.n_positions, self.n_depths, hidden)


def _pairwise_cosine(states: torch.Tensor) -> torch.Tensor:
    """(position, depth, hidden) -> (position, depth, depth): cosine between the depths' states at each position."""
    dots = torch.bmm(states, states.transpose(1, 2))
    # 1/norm from the diagonal, with no eps on purpose: a zero vector gives inf here and NaN below, never cosine 0.
    inverse_norm = dots.diagonal(dim1=1, dim2=2).rsqrt()
    return dots * inverse_norm[:, :, None] * inverse_norm[:, None, :]


def block_similarity(
    model: PreTrainedModel,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    sample: tuple[int, int] = (0, 0),
    tokenizer: PreTrainedTokenizerBase | None = None,
    progress: bool = True,
) -> SimilarityReport:
    """Cosine similarity between block inputs and outputs, depth-to-depth, and angular distance; see SimilarityReport.

    One forward pass of the backbone (no LM head) per batch, in eval mode, without gradients or KV cache; the model
    is left as it was. Cosines are computed in float32 whatever the model's dtype.

    Args:
        model: the model to measure.
        batches: dicts with ``input_ids`` and optionally ``attention_mask`` (padded positions are left out of every
            statistic; any padding side).
        sample: (batch index, row) whose per-token values go into ``token_cosine``.
        tokenizer: labels ``token_cosine`` with token strings; None labels it with ids.
        progress: show a progress bar.

    Returns:
        A ``SimilarityReport``.

    Raises:
        ValueError: if ``batches`` is empty, a batch has no 2-D ``input_ids`` or a mask of another shape or a row
            without a real token, ``sample`` does not exist, a block's state is not laid out (batch, length,
            hidden), or a hidden state is zero or not finite at a real token (its cosine would be undefined; the
            message names the block rather than reporting a number that would rank it).
        TypeError: if ``batches`` is one dict instead of a list of them, or a batch is not a dict; if a block's
            hidden state cannot be found (``hidden_input``, ``hidden_output``).
    """
    batches = _check_batches(batches, sample)
    n_blocks = len(get_blocks(model))
    sums = _Sums(n_blocks + 1)
    states = _DepthStates(n_blocks + 1)

    def hook(index: int, block_input: torch.Tensor, block_output: torch.Tensor) -> None:
        if index == 0:
            states.add(0, block_input)
        states.add(index + 1, block_output)

    token_cosine = None
    with block_hooks(model, hook):
        for number, batch in enumerate(progress_bar(batches, "similarity", progress)):
            mask = batch["attention_mask"].bool()
            states.start(mask.numel())
            # The backbone alone: the LM head's logits would be computed only to be thrown away.
            run_model(model.base_model, batch)
            cosine = _pairwise_cosine(states.gather()).view(*mask.shape, n_blocks + 1, n_blocks + 1)
            mask = mask.to(cosine.device)
            _accumulate(sums, cosine, mask, number)
            if number == sample[0]:
                row = sample[1]
                per_token = cosine[row][mask[row]].diagonal(offset=1, dim1=1, dim2=2).cpu()  # (tokens, blocks)
                ids = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
                token_cosine = _token_frame(per_token, ids, tokenizer)
    return _report(sums, n_blocks, token_cosine)


def _accumulate(sums: _Sums, cosine: torch.Tensor, mask: torch.Tensor, number: int) -> None:
    """Add one batch: ``cosine`` is (batch, length, depth, depth), ``mask`` (batch, length) marks real tokens."""
    real = cosine[mask]
    _raise_if_not_finite(real.diagonal(dim1=1, dim2=2), number)
    # The last real token of each row, whatever the padding side: the last True of its mask.
    length = mask.shape[1]
    last_position = length - 1 - mask.flip(1).int().argmax(dim=1)
    last = cosine[torch.arange(len(mask), device=mask.device), last_position].clamp(-1.0, 1.0)  # rounding can pass 1
    sums.cosine += real.sum(dim=0).double().cpu()
    sums.cosine_last += last.sum(dim=0).double().cpu()
    sums.angular += (torch.arccos(last) / math.pi).sum(dim=0).double().cpu()
    sums.tokens += len(real)
    sums.sequences += len(last)


def _token_frame(cosines: torch.Tensor, ids: list[int], tokenizer: PreTrainedTokenizerBase | None) -> pd.DataFrame:
    tokens = ids if tokenizer is None else [tokenizer.decode([i]) for i in ids]
    index = pd.MultiIndex.from_arrays([range(len(ids)), tokens], names=["position", "token"])
    return pd.DataFrame(cosines.double().numpy(), index=index, columns=pd.RangeIndex(cosines.shape[1], name="block"))


def _report(sums: _Sums, n_blocks: int, token_cosine: pd.DataFrame) -> SimilarityReport:
    depths = pd.RangeIndex(n_blocks + 1, name="depth")
    mean_cosine = (sums.cosine / sums.tokens).numpy()
    cosine = mean_cosine.diagonal(offset=1)
    cosine_last = (sums.cosine_last / sums.sequences).numpy().diagonal(offset=1)
    blocks = pd.DataFrame(
        {
            "cosine": cosine,
            "block_influence": 1.0 - cosine,
            "cosine_last": cosine_last,
            "block_influence_last": 1.0 - cosine_last,
            "tokens": sums.tokens,
            "sequences": sums.sequences,
        },
        index=pd.RangeIndex(n_blocks, name="block"),
    )

    # angular[l, l+n] -> table indexed by start l and span n; spans past the last depth stay NaN.
    mean_angular = (sums.angular / sums.sequences).numpy()
    starts, spans = pd.RangeIndex(n_blocks, name="start"), pd.RangeIndex(1, n_blocks + 1, name="n")
    angular = pd.DataFrame(
        [[mean_angular[s, s + n] if s + n <= n_blocks else math.nan for n in spans] for s in starts],
        index=starts,
        columns=spans,
        dtype=float,
    )
    best_start = angular.apply(first_minimum).astype(int).rename("best_start")  # near-ties: the earlier start
    return SimilarityReport(
        blocks=blocks,
        depth_similarity=pd.DataFrame(mean_cosine, index=depths, columns=depths.rename("depth")),
        angular_distance=angular,
        best_start=best_start,
        token_cosine=token_cosine,
    )
