"""Shared fixtures: small synthetic MNIST made inside the tests, the repo root, and an environment
restored after every test."""

import os
from pathlib import Path

import numpy as np
import pytest

from attention_clusters import idx, mnist

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "mnist"


@pytest.fixture(autouse=True)
def restore_environment():
    """Give os.environ back as it was before each test. Code under test may write it for the rest
    of its process (onednn.cap_for_convolutions sets ONEDNN_MAX_CPU_ISA), and monkeypatch only
    undoes its own changes: without this, the cap leaked into later tests and the stages they start."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def synthetic_split(n, seed):
    """n random 28x28 uint8 digits with labels cycling 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


@pytest.fixture
def idx_files():
    """dict file name -> raw IDX bytes of a 60-train / 20-test synthetic MNIST."""
    files = {}
    for split, n in (("train", 60), ("test", 20)):
        images, labels = synthetic_split(n, seed=n)
        image_name, label_name = mnist.FILES[split]
        files[image_name] = idx.encode_images(images)
        files[label_name] = idx.encode_labels(labels)
    return files
