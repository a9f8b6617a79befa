"""How much model work ``helpers.zero_shot`` does relative to lm-eval on the same items: a floor for the time ratio.

Counted in multiply-accumulates per token: the blocks' parameters for every token a forward pass runs, plus the output
head (vocabulary x hidden) for every position whose logits are computed. lm-eval's HFLM runs context + continuation
for every choice with the head at every position; the course module runs each distinct context once (head at its last
position only) and each continuation's remaining tokens once after it, in one packed row or on the context's KV cache
(head at the scored positions). Padding and per-token efficiency are not counted, so the time ratio cannot go below
this ratio unless the work itself shrinks. "with shared prefixes" is the same count if, in addition, the common prefix
of an item's choices were run once with the context (not implemented: it bounds what that idea could buy).

    python benchmarks/zero_shot_work.py            # the items of benchmarks/bench_zero_shot.py (40 per task)
    python benchmarks/zero_shot_work.py --limit 0  # every item of each task

On SmolLM2-135M-Instruct, 40 items per task: arc_easy 0.281 (0.271 with shared prefixes), piqa 0.739 (0.625),
hellaswag 0.485 (0.484), lambada_openai 0.784 (0.784); the four together 0.519 (0.502).
"""

from __future__ import annotations

import argparse

from helpers.benefits import parameter_count
from helpers.blocks import get_blocks
from helpers.fast.zero_shot_scorer import _Encoder
from helpers.model import load_model
from helpers.zero_shot import TASKS, item_ids, load_task

TASK_SET = ("arc_easy", "piqa", "hellaswag", "lambada_openai")


def _shared_prefix(continuations: list[list[int]]) -> int:
    """Tokens at the start of every continuation that are the same for all (at least one token stays unshared)."""
    length = 0
    while all(len(c) > length + 1 for c in continuations) and len({c[length] for c in continuations}) == 1:
        length += 1
    return length


def work(task: str, encoder: _Encoder, limit: int | None, block: float, head: float) -> tuple[float, float, float]:
    """(lm-eval's, the module's, the module's with shared choice prefixes) multiply-accumulates for ``task``."""
    rows = load_task(task)
    theirs = ours = shared = 0.0
    for index in item_ids(len(rows), limit, 0):
        by_context: dict[tuple[int, ...], list[list[int]]] = {}
        for context, continuation in TASKS[task].to_item(rows[index]).requests:
            ids, cont = encoder.pair(context, continuation)
            theirs += (len(ids) + len(cont)) * (block + head)
            by_context.setdefault(tuple(ids), []).append(cont)
        for ids, conts in by_context.items():
            scored = sum(map(len, conts))
            ours += (len(ids) + scored - len(conts)) * block + scored * head
            prefix = _shared_prefix(conts)
            shared += (len(ids) + scored - len(conts) - (len(conts) - 1) * prefix) * block
            shared += (scored - (len(conts) - 1) * prefix) * head
    return theirs, ours, shared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40, help="items per task (seed 0); 0 = all")
    args = parser.parse_args()
    model, tokenizer = load_model()
    block = float(parameter_count(get_blocks(model)))  # all blocks: one token through the backbone
    head = float(model.get_output_embeddings().weight.numel())
    encoder, total = _Encoder(tokenizer), [0.0, 0.0, 0.0]
    for task in TASK_SET:
        theirs, ours, shared = work(task, encoder, args.limit or None, block, head)
        total = [t + x for t, x in zip(total, (theirs, ours, shared))]
        print(f"{task}: {ours / theirs:.3f} (with shared prefixes {shared / theirs:.3f})")
    print(f"all four: {total[1] / total[0]:.3f} (with shared prefixes {total[2] / total[0]:.3f})")


if __name__ == "__main__":
    main()
