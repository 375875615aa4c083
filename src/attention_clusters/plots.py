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
