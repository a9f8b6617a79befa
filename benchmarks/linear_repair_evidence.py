"""The evidence behind ``helpers.linear_repair``'s defaults, on the course model: how many calibration tokens the map
needs, and whether leaving each sequence's first position (the attention sink) out of the fit helps.

Blocks 20-25 are removed and replaced by one map fitted on WikiText calibration samples of 128 tokens; every number is
held-out WikiText perplexity on the course's 20 evaluation windows, and the comparisons are paired over those windows.
Takes a few minutes on 2 cores (the 256-sample fit runs the model over about 28k tokens).
Offline, point ``DEPTH_PRUNING_DATA`` at the data folder and set ``HF_DATASETS_OFFLINE=1``.
"""

from __future__ import annotations

from helpers.data import calibration_batches, load_wikitext
from helpers.linear_repair import linear_repair
from helpers.model import load_model
from helpers.perplexity import perplexity_difference
from helpers.settings import set_determinism

SPAN = list(range(20, 26))
RUNS = [(16, False), (64, False), (64, True), (256, False)]
"""(calibration samples, skip_first) of each fit."""


def main() -> None:
    set_determinism(seed=0, threads=2)
    model, tokenizer = load_model()
    held_out = load_wikitext("evaluation")
    found = {}
    for samples, skip_first in RUNS:
        batches = calibration_batches(tokenizer, "wikitext", n_samples=samples, seq_len=128)
        repair = linear_repair(model, tokenizer, SPAN, batches, held_out, skip_first=skip_first, progress=False)
        found[samples, skip_first] = repair
        print(
            f"{samples} samples ({repair.maps[0].tokens} tokens), skip_first={skip_first}: held-out perplexity "
            f"{repair.pruned.ppl:.0f} pruned -> {repair.repaired.ppl:.1f} with the map ({repair.verdict})"
        )
    sink = perplexity_difference(found[64, True].repaired, found[64, False].repaired)
    print(f"counting the first position minus leaving it out (64 samples): {sink} {sink.verdict(better='lower')}")
    tokens = perplexity_difference(found[64, False].repaired, found[256, False].repaired)
    print(f"256 samples minus 64: {tokens} {tokens.verdict(better='lower')}")


if __name__ == "__main__":
    main()
