"""Loading one Flash-MNIST feature split (features and labels), checked against each other."""

import numpy as np

from .errors import UserError
from .models.attention_cluster import NUM_CLASSES
from .storage import load_npy


def check_width(x, features_path, width):
    """Refuse features (N, L, F) whose width F is not the ``width`` the model takes.

    Raises:
        UserError: naming the file, the width found and the width expected.
    """
    if width is not None and x.shape[-1] != width:
        raise UserError(
            f"{features_path}: features are {x.shape[-1]} wide, the model "
            f"expects {width}; re-run the feature stage: dvc repro feature"
        )


def load_split(features_path, labels_path, width=None):
    """Features and labels of one Flash-MNIST split, checked against each other.

    Args:
        width: if given, the feature width F the model takes (see :func:`check_width`).

    Returns:
        ``(x, y)``: float32 (N, L, F) and int (N,) labels in 0..1023.

    Raises:
        UserError: naming the file, for a wrong ndim, dtype or width, disagreeing N, or bad labels.
    """
    x = load_npy(features_path, ndim=3)
    y = load_npy(labels_path, ndim=1)
    check_width(x, features_path, width)
    if x.dtype != np.float32 or len(x) != len(y) or len(y) == 0:
        raise UserError(
            f"{features_path}: expected float32 (N, L, F) features for the "
            f"{len(y)} labels of {labels_path}, got {x.dtype} {x.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= NUM_CLASSES:
        raise UserError(f"{labels_path}: labels must be integers in 0..{NUM_CLASSES - 1}")
    return x, y
