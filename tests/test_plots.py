"""The attention picture: which rows are drawn, the frame strip, titles and the PNG itself."""

import numpy as np
from PIL import Image

from attention_clusters import plots


def softmax_rows(scores):
    w = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return w / w.sum(axis=-1, keepdims=True)


def test_few_units_are_all_drawn():
    w = softmax_rows(np.random.default_rng(0).standard_normal((3, 25)))
    rows = plots.attention_rows(w, rows=4)
    assert [name for name, _ in rows] == ["unit 0", "unit 1", "unit 2"]
    np.testing.assert_array_equal(rows[2][1], w[2])


def test_many_units_give_the_mean_and_the_strongest():
    w = np.full((6, 25), 1 / 25)
    w[4] = np.eye(25)[3]  # peak 1.0
    w[1] = 0.5 * np.eye(25)[7] + 0.5 / 25  # peak 0.52
    w[5] = 0.2 * np.eye(25)[0] + 0.8 / 25  # peak 0.232
    rows = plots.attention_rows(w, rows=4)
    assert [name for name, _ in rows] == ["mean of 6", "unit 4", "unit 1", "unit 5"]
    np.testing.assert_allclose(rows[0][1], w.mean(axis=0))
    assert abs(rows[0][1].sum() - 1) < 1e-12


def test_frame_strip_centres_each_frame_in_its_column():
    video = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)
    strip = plots.frame_strip(video, cell=32)
    assert strip.shape == (28, 96) and strip.dtype == np.uint8
    np.testing.assert_array_equal(strip[:, 34:62], video[1])
    assert (strip[:, :2] == 255).all() and (strip[:, 62:66] == 255).all()


def test_titles():
    assert plots.prediction_title(0b1001, 0b1001) == "label {0, 3}   predicted {0, 3} (right)"
    assert plots.prediction_title(0b1000, 0b1001) == "label {0, 3}   predicted {3} (wrong)"
    assert plots.prediction_title(0, probability=0.1234) == "predicted {} (12.3 %)"


def runs(mask):
    """(start, length) of each run of True in a 1-d bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts, ends - starts))


def test_attention_figure_draws_square_frames(tmp_path):
    rng = np.random.default_rng(1)
    videos = rng.integers(0, 200, (2, 25, 28, 28), dtype=np.uint8)  # no white pixel: frames stand out
    weights = softmax_rows(rng.standard_normal((2, 8, 25)))
    path = tmp_path / "attention.png"
    plots.attention_figure(videos, weights, ["a", "b"], path)
    image = np.asarray(Image.open(path).convert("L"))
    top, height = runs((image < 250).mean(axis=1) > 0.5)[0]  # the first video's frame row
    columns = runs(image[top + height // 2] < 250)
    assert len(columns) == 25  # 25 frames side by side, white gaps between
    widths = [width for _, width in columns]
    assert max(widths) - min(widths) <= 1 and abs(height - widths[0]) <= 2  # square frames
    assert height >= 35  # about 0.42 in at 100 dpi, not a thin strip
