"""Accuracy metrics, written once and shared by train, eval and infer."""

import numpy as np

from .synth import label_bits


def topk_correct(logits, labels, k):
    """Whether each label is among its row's k highest logits: bool (N,).

    Args:
        logits: float (N, K) scores; labels: int (N,) class indices.
    """
    logits = np.asarray(logits)
    top = np.argpartition(-logits, kth=min(k, logits.shape[1]) - 1, axis=1)[:, :k]
    return (top == np.asarray(labels)[:, None]).any(axis=1)


def accuracy(logits, labels, k=1):
    """Top-k accuracy in percent over all N samples (float)."""
    return 100.0 * float(topk_correct(logits, labels, k).mean())


def top1_by_digit_count(logits, labels):
    """Flash-MNIST top-1 (%) grouped by the number of digits in the video's label.

    Returns:
        dict ``"0"``..``"10"`` -> {"videos": n, "top1": percent or None when n == 0}.
    """
    correct = topk_correct(logits, labels, 1)
    counts = label_bits(labels).sum(axis=1)
    report = {}
    for digits in range(11):
        mask = counts == digits
        report[str(digits)] = {
            "videos": int(mask.sum()),
            "top1": round(100.0 * float(correct[mask].mean()), 3) if mask.any() else None,
        }
    return report
