"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread per test module: tiny models gain nothing from threads, and on a small shared CPU runner
    competing OpenMP threads make each operation 10-20x slower. The previous count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
