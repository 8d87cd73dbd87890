"""Shared fixtures: the reference parity case and tiny models built offline from configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import tiny

# Tiny models run faster on one thread, and the CLI subprocesses inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

DATA = Path(__file__).parent / "data"
PARITY = DATA / "parity"


@pytest.fixture(scope="session")
def parity_case() -> dict[str, np.ndarray]:
    with np.load(PARITY / "expected.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture
def parity_model():
    from transformers import ViTForImageClassification

    return ViTForImageClassification.from_pretrained(PARITY).eval()


@pytest.fixture
def softmax_in_float64(monkeypatch):
    """Softmax that keeps a float64 input in float64 when asked for float32.

    transformers' eager attention computes the softmax in float32 even for a float64 model; float64
    comparisons (the parity case's README recipe) need the whole computation in float64.
    """
    softmax = torch.nn.functional.softmax

    def keeping_float64(input, dim=None, _stacklevel=3, dtype=None):
        if dtype == torch.float32 and input.dtype == torch.float64:
            dtype = torch.float64
        return softmax(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)

    monkeypatch.setattr(torch.nn.functional, "softmax", keeping_float64)


@pytest.fixture
def vit():
    return tiny.build("vit")


@pytest.fixture(scope="module")
def pixels():
    """Three random 32x32 images (seed 1): the family suites' batch."""
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def images():
    """Four random 32x32 images for the tiny models."""
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
