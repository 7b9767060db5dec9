"""Shared pytest fixtures."""

import os

import pytest
import torch

# `precision: auto` means bf16 on CPUs with bf16 units; the suite compares against fp32 references bit
# for bit, so `auto` means fp32 here on every machine (tests/test_precision.py clears this to test the
# hardware logic itself).
os.environ.setdefault("EQUISEG_AUTO_PRECISION", "fp32")

# Tiny test models run faster on one thread than on two busy ones (and CI has 2 cores).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
