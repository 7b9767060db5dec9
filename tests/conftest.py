"""Shared pytest fixtures."""

import pytest
import torch

# Tiny test models run faster on one thread than on two busy ones (and CI has 2 cores).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
