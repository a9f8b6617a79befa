"""The per-item results of ``helpers.zero_shot.evaluate_zero_shot``, computed by lm-eval itself: the independent
computation that the tests and ``benchmarks/bench_zero_shot.py`` check the fast scorer against (needs ``lm-eval``
0.4.x, a test requirement, not a run-time one)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data import Source
from ..hooks import eval_mode
from ..zero_shot import check_tasks, load_task

LM_EVAL_YAMLS = {
    "hellaswag": "hellaswag/hellaswag.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "piqa": "piqa/piqa.yaml",
    "winogrande": "winogrande/default.yaml",
    "boolq": "super_glue/boolq/default.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
    "lambada_openai": "lambada/lambada_openai.yaml",
}
"""Task -> its YAML inside lm-eval's ``lm_eval/tasks`` folder (used by ``lm_eval_reference``)."""


def lm_eval_reference(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: dict[str, Sequence[int]],
    workdir: Path,
    *,
    batch_size: int = 16,
    source: Source = "auto",
    timings: dict[str, float] | None = None,
) -> pd.DataFrame:
    """The same per-item frame as ``evaluate_zero_shot``, computed by lm-eval itself (needs ``lm-eval`` 0.4.x).

    lm-eval reads the hub; to run it offline too, the chosen rows (``load_task``) are written as JSON lines into
    ``workdir`` with task YAMLs that include lm-eval's own YAML and change only where the documents come from, so
    prompts, choices and metrics are lm-eval's. Meant to check the fast scorer, not to replace it.

    Args:
        model: the causal LM to evaluate.
        tokenizer: its tokenizer.
        items: ``{task: [row index, ...]}``, the rows to evaluate.
        workdir: folder for the JSON lines, YAMLs and lm-eval's dataset cache; created when missing.
        batch_size: lm-eval's batch size.
        source: where the documents come from, as in ``load_task``.
        timings: when given, receives the seconds lm-eval spent in its log-likelihood requests, added to the key
            ``"loglikelihood"``.

    Returns:
        A frame with columns ``task``, ``item``, ``loglik``, ``acc`` and ``acc_norm`` (NaN where lm-eval reports
        none).

    Raises:
        ModuleNotFoundError: if lm-eval is not installed.
        ValueError: if the tasks of ``items`` are empty, unknown or repeated; as ``load_task``.
        TypeError, FileNotFoundError: as ``load_task``.
    """
    import lm_eval
    import lm_eval.tasks
    from lm_eval.models.huggingface import HFLM

    check_tasks(items)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    builtin = Path(lm_eval.tasks.__file__).parent
    for task, chosen in items.items():
        rows = load_task(task, source=source)
        data = workdir / f"{task}.jsonl"
        data.write_text("".join(json.dumps(rows[i]) + "\n" for i in chosen), encoding="utf-8")
        (workdir / f"course_{task}.yaml").write_text(
            f"include: {builtin / LM_EVAL_YAMLS[task]}\ntask: course_{task}\ntag: []\ndataset_path: json\n"
            f"dataset_name: null\ndataset_kwargs:\n  data_files:\n    test: {data}\n  cache_dir: {workdir / 'cache'}\n"
            "training_split: null\nvalidation_split: null\ntest_split: test\nfewshot_split: null\n",
            encoding="utf-8",
        )
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    loglikelihood = lm.loglikelihood

    def timed(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        result = loglikelihood(*args, **kwargs)
        if timings is not None:
            timings["loglikelihood"] = timings.get("loglikelihood", 0.0) + time.perf_counter() - start
        return result

    lm.loglikelihood = timed
    with eval_mode(model):
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[f"course_{task}" for task in items],
            num_fewshot=0,
            log_samples=True,
            task_manager=lm_eval.tasks.TaskManager(include_path=str(workdir), include_defaults=False),
            verbosity="ERROR",
        )
    table = []
    for task, chosen in items.items():
        by_doc = {sample["doc_id"]: sample for sample in results["samples"][f"course_{task}"]}
        for doc, item in enumerate(chosen):
            sample = by_doc[doc]
            table.append(
                {
                    "task": task,
                    "item": int(item),
                    "loglik": tuple(float(response[0]) for response in sample["filtered_resps"]),
                    "acc": float(sample["acc"]),
                    "acc_norm": float(sample.get("acc_norm", np.nan)),
                }
            )
    return pd.DataFrame(table)
