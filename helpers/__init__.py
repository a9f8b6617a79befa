"""Helpers for the depth-pruning course: load a model and data, remove blocks, analyse and evaluate them."""

from .blocks import BLOCK_PATHS, get_blocks, num_blocks
from .pruning import prune_blocks, skip_blocks
from .settings import DEFAULT_MODEL, set_determinism
