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
def vit():
    return tiny.build("vit")


@pytest.fixture
def images():
    """Four random 32x32 images for the tiny models."""
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
