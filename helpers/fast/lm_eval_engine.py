"""lm-eval itself behind ``helpers.zero_shot.evaluate_zero_shot(..., engine="lm-eval")``: the engine for models that
outgrow one CPU (lm-eval's ``HFLM`` batches on any device), and the independent computation the course's fast scorer
is tested against. Needs ``lm-eval`` 0.4.x (``pip install lm-eval``), a development requirement, not a run-time one.

lm-eval reads the hub; to run it offline too, the chosen documents are written as JSON lines into a temporary folder
with task YAMLs that include lm-eval's own YAML and change only where the documents come from, so prompts, choices and
metrics are lm-eval's. Its logged samples become the course's per-item frame.
"""

from __future__ import annotations

import copy
import functools
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..hooks import eval_mode

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
"""Task -> its YAML inside lm-eval's ``lm_eval/tasks`` folder."""


def _write_tasks(documents: Mapping[str, Mapping[int, dict]], builtin: Path, workdir: Path) -> None:
    """Each task's documents as JSON lines beside a YAML that is lm-eval's own with only the data files changed."""
    for task, rows in documents.items():
        data = workdir / f"{task}.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows.values()), encoding="utf-8")
        (workdir / f"course_{task}.yaml").write_text(
            f"include: {builtin / LM_EVAL_YAMLS[task]}\ntask: course_{task}\ntag: []\ndataset_path: json\n"
            f"dataset_name: null\ndataset_kwargs:\n  data_files:\n    test: {data}\n  cache_dir: {workdir / 'cache'}\n"
            "training_split: null\nvalidation_split: null\ntest_split: test\nfewshot_split: null\n",
            encoding="utf-8",
        )


def _row(task: str, item: int, lm_task: object, sample: dict) -> dict:
    """One logged sample as a row of ``evaluate_zero_shot``'s frame: lm-eval's log-likelihoods, acc and acc_norm,
    with the gold index and predictions by lm-eval's own rules (``ConfigurableTask.process_results``)."""
    loglik = np.array([float(response[0]) for response in sample["filtered_resps"]])
    row = {"task": task, "item": item, "gold": 0, "loglik": tuple(loglik.tolist()), "pred": -1}
    row |= {"acc": float(sample["acc"]), "pred_norm": -1, "acc_norm": float(sample.get("acc_norm", np.nan))}
    if lm_task.OUTPUT_TYPE != "multiple_choice":  # LAMBADA: one continuation, acc = greedy match
        return row
    doc = sample["doc"]
    choices = lm_task.doc_to_choice(doc)
    gold = lm_task.doc_to_text(doc) if lm_task.multiple_input else lm_task.doc_to_target(doc)
    row["gold"] = choices.index(gold) if isinstance(gold, str) else int(gold)
    row["pred"] = int(np.argmax(loglik))
    if "acc_norm" in sample:
        row["pred_norm"] = int(np.argmax(loglik / np.array([float(len(choice)) for choice in choices])))
    return row


def lm_eval_items(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    documents: Mapping[str, Mapping[int, dict]],
    *,
    batch_size: int | str = 16,
    progress: bool = True,
) -> pd.DataFrame:
    """``evaluate_zero_shot``'s per-item frame, computed by lm-eval's evaluator with ``HFLM(pretrained=model)``.

    Args:
        model: the causal LM to evaluate (lm-eval runs it where it is: cpu or cuda).
        tokenizer: its tokenizer.
        documents: ``{task: {row index: document}}``, the hub rows to evaluate (``load_task``), in item order.
        batch_size: ``HFLM``'s batch size (an int, or "auto" to let lm-eval find the largest that fits).
        progress: show lm-eval's log-likelihood progress bar.

    Returns:
        The frame ``evaluate_zero_shot`` returns, in the order of ``documents``.

    Raises:
        ImportError: if lm-eval is not installed (the message says how to install it).
    """
    try:
        import lm_eval
        import lm_eval.tasks
        from lm_eval.models.huggingface import HFLM
    except ImportError as error:
        raise ImportError('engine="lm-eval" needs lm-eval 0.4.x: pip install lm-eval') from error

    with tempfile.TemporaryDirectory() as workdir:
        _write_tasks(documents, Path(lm_eval.tasks.__file__).parent, Path(workdir))
        manager = lm_eval.tasks.TaskManager(include_path=workdir, include_defaults=False)
        lm_tasks = lm_eval.tasks.get_task_dict([f"course_{task}" for task in documents], manager)
        with eval_mode(model):  # HFLM calls model.eval(): the caller's training flags come back on exit
            # A copy: HFLM gives a tokenizer without a pad token one, which would change the caller's tokenizer.
            lm = HFLM(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=batch_size)
            lm.loglikelihood = functools.partial(lm.loglikelihood, disable_tqdm=not progress)
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(lm_tasks.values()),
                task_manager=manager,  # else lm-eval indexes all its own tasks again
                num_fewshot=0,
                log_samples=True,
                bootstrap_iters=0,  # the per-item rows are the result: no standard errors of lm-eval's aggregates
                verbosity="ERROR",
                random_seed=None,  # zero-shot scoring draws nothing: leave the caller's generators alone
                numpy_random_seed=None,
                torch_random_seed=None,
            )
    table = []
    for task, rows in documents.items():
        by_doc = {sample["doc_id"]: sample for sample in results["samples"][f"course_{task}"]}
        table += [_row(task, int(item), lm_tasks[f"course_{task}"], by_doc[doc]) for doc, item in enumerate(rows)]
    return pd.DataFrame(table)
