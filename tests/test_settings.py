"""set_determinism against seeding Python, NumPy and torch by hand."""

from __future__ import annotations

import random

import numpy as np
import torch

from helpers.settings import set_determinism


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_set_determinism_seeds_python_numpy_and_torch_and_the_thread_count():
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    expected = draws()
    set_determinism(3, threads=2)
    assert draws() == expected
    assert torch.get_num_threads() == 2
    set_determinism(4, threads=None)
    assert torch.get_num_threads() == 2 and draws() != expected
