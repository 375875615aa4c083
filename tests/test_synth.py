import numpy as np
import pytest

from attention_clusters import synth


def skewed_hist():
    hist = np.zeros(256, dtype=np.int64)
    hist[0], hist[1], hist[128], hist[255] = 700_000, 3, 200_000, 99_997
    return hist


def test_noise_sampler_follows_histogram():
    hist = skewed_hist()
    sample = synth.NoiseSampler(hist).sample(np.random.default_rng(0), (2_000_000,))
    assert sample.dtype == np.uint8
    counts = np.bincount(sample, minlength=256)
    assert set(np.flatnonzero(counts)) <= {0, 1, 128, 255}
    expected = hist / hist.sum() * sample.size
    sigma = np.sqrt(expected * (1 - hist / hist.sum()))
    big = hist > 1000
    assert (np.abs(counts[big] - expected[big]) < 5 * sigma[big]).all()


def test_noise_sampler_on_a_smooth_histogram_matches_chi_square():
    rng = np.random.default_rng(1)
    hist = rng.integers(1, 1000, size=256)
    sample = synth.NoiseSampler(hist).sample(np.random.default_rng(2), (1_000_000,))
    expected = hist / hist.sum() * sample.size
    chi2 = (((np.bincount(sample, minlength=256) - expected) ** 2) / expected).sum()
    assert chi2 < 255 + 6 * np.sqrt(2 * 255)  # 255 degrees of freedom, 6 sigma


def test_noise_sampler_rejects_bad_histograms():
    with pytest.raises(ValueError):
        synth.NoiseSampler(np.zeros(256))
    with pytest.raises(ValueError):
        synth.NoiseSampler(np.ones(10))


def test_pixel_histogram_counts_every_pixel():
    a = np.zeros((2, 28, 28), np.uint8)
    b = np.full((1, 28, 28), 7, np.uint8)
    hist = synth.pixel_histogram(a, b)
    assert hist[0] == 2 * 784 and hist[7] == 784 and hist.sum() == 3 * 784


def test_class_index_groups_digits():
    labels = np.array([3, 1, 3, 0, 1, 3], np.uint8)
    order, starts = synth.class_index(labels)
    assert starts.tolist() == [0, 1, 3, 3, 6, 6, 6, 6, 6, 6, 6]
    assert order.tolist() == [3, 1, 4, 0, 2, 5]


def coded_pool():
    """Digit pool whose class-c digits are frames filled with 200 + c, with noise below 200."""
    labels = np.repeat(np.arange(10, dtype=np.uint8), 3)
    images = (200 + labels)[:, None, None] * np.ones((1, 28, 28), np.uint8)
    hist = np.zeros(256, np.int64)
    hist[:100] = 1
    order, starts = synth.class_index(labels)
    return images.astype(np.uint8), order, starts, synth.NoiseSampler(hist)


def test_flash_videos_hold_exactly_the_label_digits_once_or_twice():
    images, order, starts, noise = coded_pool()
    labels = np.arange(1024)
    videos = synth.flash_videos(labels, images, order, starts, noise, np.random.default_rng(3))
    assert videos.shape == (1024, 25, 28, 28) and videos.dtype == np.uint8
    value = videos.max(axis=(2, 3))  # 200 + digit for a digit frame, < 100 for pure noise
    assert ((value < 100) | (value >= 200)).all()
    copies = np.stack([(value == 200 + d).sum(axis=1) for d in range(10)], axis=1)
    bits = synth.label_bits(labels)
    assert ((copies >= 1) & (copies <= 2) | ~bits).all() and (copies[~bits] == 0).all()
    assert set(np.unique(copies[bits])) == {1, 2}  # both counts occur
    # digit frames land anywhere: every position holds a digit in some video
    assert (value >= 200).any(axis=0).all()


def test_paste_is_pixelwise_max_of_noise_and_digit():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    noise = synth.NoiseSampler(rng.integers(1, 50, 256))
    frames, targets = synth.noisy_mnist(images, labels, 2, 3, noise, seed=9)
    expected_noise = noise.sample(np.random.default_rng(9), (10, 28, 28))
    assert np.array_equal(frames[:10], np.maximum(expected_noise, np.tile(images, (2, 1, 1))))
    assert targets.tolist() == [0, 1, 2, 3, 4] * 2 + [10] * 3
    assert frames.shape == (13, 28, 28)


def test_flash_generation_is_deterministic_and_thread_independent():
    images, order, starts, noise = coded_pool()
    labels = synth.flash_labels(2, seed=[0, 0])
    assert np.bincount(labels, minlength=1024).tolist() == [2] * 1024
    outs = []
    for threads in (1, 2, 2):
        out = np.empty((len(labels), 25, 28, 28), np.uint8)
        synth.generate_flash(out, labels, images, order, starts, noise, seed=[5, 1], threads=threads)
        outs.append(out)
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[1], outs[2])
    other = np.empty_like(outs[0])
    synth.generate_flash(other, labels, images, order, starts, noise, seed=[6, 1])
    assert not np.array_equal(other, outs[0])


def test_sample_digits_needs_every_requested_class():
    order, starts = synth.class_index(np.array([0, 0, 1], np.uint8))
    with pytest.raises(ValueError, match="class 5"):
        synth.sample_digits(np.random.default_rng(0), np.array([0, 5]), order, starts)


@pytest.mark.parametrize(
    "count, pool, full, expected",
    [(100, 60000, 60000, 100), (100, 4000, 60000, 7), (10, 1000, 10000, 1), (10, 100, 10000, 1), (0, 4000, 60000, 0)],
)
def test_scaled_count(count, pool, full, expected):
    assert synth.scaled_count(count, pool, full) == expected


@pytest.mark.parametrize("count, floor, expected", [(100, 40, 40), (10, 40, 10), (100, 5, 7), (0, 40, 0), (100, 0, 7)])
def test_scaled_count_floor(count, floor, expected):
    """A floor keeps small pools' video counts up, never above the count asked for."""
    assert synth.scaled_count(count, 4000, 60000, floor) == expected
    assert synth.scaled_count(count, 60000, 60000, floor) == count  # full MNIST: unchanged
