"""Every picture the pipeline draws (matplotlib, Agg backend, written atomically as PNG)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .storage import atomic_path  # noqa: E402
from .synth import label_bits  # noqa: E402

GRID = 5  # a 25-frame video drawn as 5 x 5


def video_grid(video, gap=2):
    """Tile a (25, 28, 28) uint8 video into one (5*28 + 4*gap)-square uint8 image, row-major."""
    frames, rows, cols = video.shape
    size = GRID * rows + (GRID - 1) * gap
    canvas = np.full((size, size), 128, dtype=np.uint8)
    for k in range(frames):
        r, c = divmod(k, GRID)
        canvas[r * (rows + gap) : r * (rows + gap) + rows, c * (cols + gap) : c * (cols + gap) + cols] = video[k]
    return canvas


def digits_text(label):
    """A Flash-MNIST label as the set of its digits, e.g. ``{0, 3, 7}`` (``{}`` for label 0)."""
    return "{" + ", ".join(str(d) for d in np.flatnonzero(label_bits([label])[0])) + "}"


def save_figure(fig, path):
    """Write a matplotlib figure to ``path`` as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def flash_preview(videos, labels, path):
    """PNG of a few Flash-MNIST videos, each a 5 x 5 grid of its frames titled with its digits.

    Args:
        videos: uint8 (k, 25, 28, 28); labels: int (k,) 10-bit masks.
    """
    fig, axes = plt.subplots(1, len(videos), figsize=(3 * len(videos), 3.4), squeeze=False)
    for ax, video, label in zip(axes[0], videos, labels):
        ax.imshow(video_grid(video), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"label {int(label)}: digits {digits_text(label)}", fontsize=9)
        ax.axis("off")
    save_figure(fig, path)


def attention_figure(videos, labels, predictions, weights, path, max_units=16):
    """PNG: for each video, its 25 frames in a row and the attention weights over them below.

    Args:
        videos: uint8 (k, 25, 28, 28); labels, predictions: int (k,) 10-bit masks.
        weights: float (k, C, 25) attention weights (each row sums to 1); at most ``max_units``
            units are drawn.
    """
    k, frames = videos.shape[:2]
    units = min(weights.shape[1], max_units)
    fig, axes = plt.subplots(2 * k, 1, figsize=(12, k * (1.2 + 0.25 * units)), squeeze=False,
                             gridspec_kw={"height_ratios": [1, 0.25 * units + 0.3] * k})
    for i in range(k):
        strip = np.concatenate(list(videos[i]), axis=1)
        top, bottom = axes[2 * i, 0], axes[2 * i + 1, 0]
        top.imshow(strip, cmap="gray", vmin=0, vmax=255, aspect="auto", extent=(0, frames, 0, 1))
        top.set_title(f"label {digits_text(labels[i])}   predicted {digits_text(predictions[i])}", fontsize=9)
        top.axis("off")
        image = bottom.imshow(weights[i, :units], cmap="viridis", aspect="auto", extent=(0, frames, units, 0), vmin=0)
        bottom.set_yticks(np.arange(units) + 0.5, [str(u) for u in range(units)], fontsize=6)
        bottom.set_xticks(np.arange(frames) + 0.5, [str(f) for f in range(frames)], fontsize=6)
        bottom.set_ylabel("unit", fontsize=8)
        fig.colorbar(image, ax=bottom, fraction=0.02, pad=0.01)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    save_figure(fig, path)
