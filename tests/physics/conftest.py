"""Fixtures shared by the physics tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """These problems are tiny: run them single-threaded (faster, and immune to
    OpenMP stalls on a loaded machine); restore the caller's setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
