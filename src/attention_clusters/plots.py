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


def label_digits(label):
    """The digits present in one 10-bit label (bit d set = digit d present), e.g. ``[0, 3, 9]``."""
    return [int(d) for d in np.flatnonzero(label_bits([label])[0])]


def digits_text(label):
    """A Flash-MNIST label as the set of its digits, e.g. ``{0, 3, 7}`` (``{}`` for label 0)."""
    return "{" + ", ".join(map(str, label_digits(label))) + "}"


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


def attention_rows(weights, rows=4):
    """The attention rows drawn under one video's frames: every unit when there are at most
    ``rows``, else the mean over all units and the ``rows - 1`` strongest (highest peak weight).

    Args:
        weights: float (C, L) attention weights of one video (each row sums to 1).

    Returns:
        list of ``(name, float (L,) weights)``, e.g. ``[("unit 0", w0)]`` or
        ``[("mean of 32", m), ("unit 7", w7), ...]`` (strongest first).
    """
    weights = np.asarray(weights, dtype=np.float64)
    units = len(weights)
    if units <= rows:
        return [(f"unit {u}", weights[u]) for u in range(units)]
    strongest = np.argsort(-weights.max(axis=1), kind="stable")[: rows - 1]
    return [(f"mean of {units}", weights.mean(axis=0))] + [(f"unit {u}", weights[u]) for u in strongest]


def frame_strip(video, cell=32):
    """The frames of a (L, 28, 28) uint8 video side by side, each centred in a ``cell``-pixel
    wide white column: uint8 (28, L * cell)."""
    frames, side = video.shape[:2]
    strip = np.full((side, frames * cell), 255, dtype=np.uint8)
    left = (cell - video.shape[2]) // 2
    for k in range(frames):
        strip[:, k * cell + left : k * cell + left + video.shape[2]] = video[k]
    return strip


# Layout of the attention picture, in inches.
_CELL_IN = 0.5  # width of one frame's column
_MARGIN_IN = (0.9, 0.2)  # left (row names), right
_TITLE_IN = 0.35
_ROW_IN = 0.55  # one attention row
_GAP_IN = 0.45  # frame numbers under the last row, space before the next video


def attention_figure(videos, weights, titles, path, rows=4):
    """PNG: per video, its frames in a row at their own aspect, and under each frame the
    attention weights of :func:`attention_rows` as bars labelled in percent.

    Args:
        videos: uint8 (k, L, 28, 28). weights: float (k, C, L), each row summing to 1.
        titles: k strings, e.g. from :func:`prediction_title`. rows: attention rows per video.
    """
    k, frames, side = videos.shape[:3]
    cell = 32
    frame_in = _CELL_IN * side / cell
    n_rows = min(weights.shape[1], rows)
    block = _TITLE_IN + frame_in + n_rows * _ROW_IN + _GAP_IN
    width, height = _MARGIN_IN[0] + frames * _CELL_IN + _MARGIN_IN[1], k * block
    fig = plt.figure(figsize=(width, height))
    for i in range(k):
        top = height - i * block - _TITLE_IN
        ax = _axes(fig, width, height, top - frame_in, frame_in)
        ax.imshow(
            frame_strip(videos[i], cell),
            cmap="gray",
            vmin=0,
            vmax=255,
            extent=(-0.5, frames - 0.5, 0, 1),
            aspect="auto",
        )
        ax.set_title(titles[i], fontsize=10, loc="left")
        ax.axis("off")
        unit_rows = attention_rows(weights[i], rows)
        peak = max(float(values.max()) for _, values in unit_rows)
        for r, (name, values) in enumerate(unit_rows):
            bottom = top - frame_in - (r + 1) * _ROW_IN
            _weight_row(_axes(fig, width, height, bottom, _ROW_IN * 0.9), name, values, peak, r == len(unit_rows) - 1)
    save_figure(fig, path)


def _axes(fig, width, height, bottom, tall):
    """An axes spanning the frame columns, ``tall`` inches high from ``bottom`` (inches)."""
    return fig.add_axes((_MARGIN_IN[0] / width, bottom / height, 1 - sum(_MARGIN_IN) / width, tall / height))


def _weight_row(ax, name, values, peak, numbered):
    """Bars of one attention row under the frames, each labelled with its weight in percent."""
    frames = len(values)
    ax.bar(np.arange(frames), values, width=0.8, color="tab:blue")
    for f, value in enumerate(values):
        ax.text(f, value + 0.03 * peak, f"{100 * value:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xlim(-0.5, frames - 0.5)
    ax.set_ylim(0, 1.35 * peak)
    ax.set_yticks([])
    ax.set_ylabel(f"{name}\n(%)", fontsize=8, rotation=0, ha="right", va="center")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_xticks(np.arange(frames), [str(f) for f in range(frames)] if numbered else [], fontsize=7)
    ax.tick_params(axis="x", length=0)


def prediction_title(prediction, label=None, probability=None):
    """Title of one video in the attention picture, e.g. ``label {0, 3}  predicted {0, 3} (right)``.

    Args:
        prediction: the predicted 10-bit mask (int). label: the true mask, if known.
        probability: the prediction's probability (0..1), if to be shown.
    """
    text = f"predicted {digits_text(prediction)}"
    if probability is not None:
        text += f" ({100 * probability:.1f} %)"
    if label is None:
        return text
    verdict = "right" if int(label) == int(prediction) else "wrong"
    return f"label {digits_text(label)}   {text} ({verdict})"
