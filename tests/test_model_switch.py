"""Every notebook runs with ``MODEL_ID`` pointed at another model: nothing in the course may assume SmolLM2.

The other model is a tiny random Gemma 3 text model, built here and saved with its tokenizer to a temporary folder:
another family (sliding-window and global attention layers alternate, embeddings scaled, pre- and post-norms), another
depth (12 blocks, not 30), and a tokenizer that puts BOS in front of every text (SmolLM2's does not). The tokenizer is
a small byte-level BPE trained on WikiText lines, so it encodes any text the notebooks feed it. Each notebook gets
``MODEL_ID`` and small sample counts through an injected parameters cell (``run_notebooks.with_parameters``) and runs
top to bottom in a fresh kernel with the environment nbval's kernels get (KERNEL_ENV, offline); the Colab install
cell (tagged ``nbval-skip``) is skipped. Any cell error fails the test. The numbers are not checked: a random model's
are meaningless, and strict nbval checks the course model's.

    python -m pytest -m model_switch tests/test_model_switch.py
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient.exceptions import CellExecutionError
from run_notebooks import KERNEL_ENV, OFFLINE_ENV, course_notebooks, run, with_parameters
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

from helpers.data import WIKITEXT_FILE
from helpers.model import save_pruned
from helpers.settings import data_dir

pytestmark = pytest.mark.model_switch

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = [path.relative_to(REPO / "notebooks").as_posix() for path in course_notebooks(REPO / "notebooks")]
SKIP_TAG = "nbval-skip"
"""The Colab install cell's tag: nbval skips it, and so does this test."""

EXPLORER = dict(
    SEQ_LEN=32, WIKI_SAMPLES=2, SMS_SAMPLES=4, EVAL_WINDOWS=2, EVAL_SMS=8, SHOTS=2, PANEL_WINDOWS=2, PANEL_SMS=8
)
SMALL: dict[str, dict[str, object]] = {
    "01_fundamentals_and_benefits.ipynb": dict(NEW_TOKENS_TEXT=4, PROMPT_TOKENS=16, NEW_TOKENS=4, REPETITIONS=1),
    "02_static_block_selection.ipynb": dict(SEQ_LEN=32, EVAL_WINDOWS=2, EVAL_SMS=8, SHOTS=2, MAX_NEW_TOKENS=4),
    "03_pytorch_hooks.ipynb": dict(N_CALIBRATION=2, SEQ_LEN=32),
    "04_cosine_similarity.ipynb": dict(N_CALIBRATION=2, SEQ_LEN=32, EVAL_WINDOWS=2, EVAL_SMS=8, SHOTS=2),
    "05_wikitext_vs_sms.ipynb": dict(
        **EXPLORER, TASK_SAMPLES=4, NOISE_SPLITS=2, ZERO_SHOT_SMS=4, K_SWEEP=(1, 2), BENCHMARK_LIVE=2
    ),
    "06_shortened_llama_in_practice.ipynb": dict(
        CALIBRATION_SAMPLES=2,
        SEQ_LEN=32,
        EVAL_WINDOWS=2,
        EVAL_SMS=8,
        CHECK_SAMPLES=1,
        SLEB_SAMPLES=1,
        SHOTS=2,
        HEAL_STEPS=2,
        HEAL_BATCH=1,
        BENCHMARK_LIVE=2,
        REPAIR_SAMPLES=4,
        REPAIR_SMS=8,
    ),
    "07_hands_on_lab.ipynb": dict(**EXPLORER, REPAIR_SAMPLES=2, REPAIR_KS=(1, 2)),
    "solutions/07_hands_on_lab_solutions.ipynb": dict(**EXPLORER, REPAIR_SAMPLES=2, REPAIR_KS=(1, 2)),  # the lab's
}
"""Per notebook, the parameters that set how much it computes, made small: the tiny model is quick, but the stored
sample counts would still take minutes per notebook on two CPU cores."""

TOKENIZER_LINES = 400
"""WikiText lines the tokenizer is trained on: enough for common English words to become single tokens."""
VOCAB = 1024
SPECIALS = ["<pad>", "<bos>", "<eos>"]


def wikitext_tokenizer(lines: list[str], vocab_size: int = VOCAB) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``lines``, with pad/BOS/EOS (ids 0, 1, 2) and BOS put in front of every
    text, as Gemma's tokenizer does. Byte-level: any text (SMS slang, digits, symbols) encodes, nothing is unknown."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(lines, trainer=trainer)
    bos = backend.token_to_id("<bos>")
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B:1", special_tokens=[("<bos>", bos)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


def gemma3_model(vocab_size: int, seed: int = 0) -> torch.nn.Module:
    """A tiny random Gemma 3 text model with 12 blocks: 5 sliding-window layers, 1 global, 5 sliding, 1 global.

    The window (16 tokens) is shorter than the notebooks' windows here (SEQ_LEN 32), so both layer kinds really
    differ; the position limit leaves room for few-shot SMS prompts.
    """
    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=12,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=16,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with the tiny Gemma 3 model and its tokenizer, as ``load_model(folder)`` reads it."""
    wikitext = data_dir() / WIKITEXT_FILE
    if not wikitext.is_file():
        raise FileNotFoundError(f"{wikitext} is missing: the notebooks need the offline data copies (data/README.md)")
    with wikitext.open(encoding="utf-8") as file:
        lines = [line.strip() for line in file if line.strip()][:TOKENIZER_LINES]
    tokenizer = wikitext_tokenizer(lines)
    model = gemma3_model(len(tokenizer))
    assert len(set(model.config.layer_types)) == 2, "the model should mix sliding-window and global layers"
    return save_pruned(model, tokenizer, tmp_path_factory.mktemp("gemma3-tiny"))


def kernel_env() -> dict[str, str]:
    """nbval's kernel environment (KERNEL_ENV), offline; the data folder and whatever the caller set explicitly win."""
    return {**KERNEL_ENV, **OFFLINE_ENV, **os.environ}


def failed_cell(notebook: nbformat.NotebookNode) -> int | None:
    """Index, in the notebook as stored (without the injected cell), of the first cell with an error output."""
    injected = next(
        i for i, cell in enumerate(notebook.cells) if "injected-parameters" in cell.metadata.get("tags", [])
    )
    for index, cell in enumerate(notebook.cells):
        if any(output.get("output_type") == "error" for output in cell.get("outputs", [])):
            return index - (index > injected)
    return None


def test_every_notebook_has_small_sizes() -> None:
    assert sorted(SMALL) == NOTEBOOKS, "give every notebook (and only those) its small sizes in SMALL"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_with_another_model(name: str, other_model: Path, tmp_path: Path) -> None:
    target = tmp_path / Path(name).name
    with_parameters(REPO / "notebooks" / name, target, {"MODEL_ID": str(other_model), **SMALL.get(name, {})})
    notebook = nbformat.read(target, as_version=4)
    try:
        run(notebook, tmp_path, timeout=300, env=kernel_env(), skip_tag=SKIP_TAG)
    except CellExecutionError as error:
        pytest.fail(f"{name}, cell {failed_cell(notebook)}, fails with a Gemma 3 model:\n{error}", pytrace=False)
