"""SeededDropout: inverted-dropout arithmetic, per-channel masks, eval identity, masks fixed by (seed, stream)."""

import mindspore as ms
import numpy as np
import pytest

from attention_clusters import device
from attention_clusters.models.dropout import SeededDropout, mask_bits

device.init("CPU", seed=0)


def test_elementwise_masks_scale_kept_values_and_differ_between_steps():
    x = ms.Tensor(np.arange(1, 1 + 8 * 30 * 20, dtype=np.float32).reshape(8, 30, 20))
    layer = SeededDropout(0.25, stream=1)
    layer.set_train(True)
    first, second = layer(x).asnumpy(), layer(x).asnumpy()
    kept = first != 0
    np.testing.assert_allclose(first[kept], x.asnumpy()[kept] / 0.75, rtol=1e-6)
    assert 0.70 < kept.mean() < 0.80
    assert (kept != (second != 0)).any()


def test_per_channel_masks_drop_whole_channels_and_eval_is_identity():
    x = ms.Tensor(np.ones((16, 12, 20), np.float32))
    layer = SeededDropout(0.5, stream=1, per_channel=True)
    layer.set_train(True)
    out = layer(x).asnumpy()
    assert set(np.unique(out)) <= {0.0, 2.0}
    assert (out == out[:, :1, :]).all()  # one draw per (frame, channel)
    layer.set_train(False)
    np.testing.assert_array_equal(layer(x).asnumpy(), x.asnumpy())


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_probability_outside_range_is_refused(p):
    with pytest.raises(ValueError, match="dropout probability"):
        SeededDropout(p, stream=1)


@pytest.mark.parametrize("p, bits", [(0, 1), (0.5, 1), (0.25, 2), (0.375, 4), (0.1, 16), (np.float32(0.75), 2)])
def test_mask_bits_are_the_fewest_that_represent_p(p, bits):
    assert mask_bits(p) == bits


@pytest.mark.parametrize("p", [0.1, 0.3, 0.999])
def test_masks_keep_one_minus_p_and_the_output_is_unbiased(p):
    """16-bit fields (p not a multiple of 2**-8): the scale is 1 / P(keep) of the rounded p."""
    layer = SeededDropout(p, stream=1)
    layer.set_train(True)
    out = layer(ms.Tensor(np.ones((1000, 1000), np.float32))).asnumpy()
    kept = (out != 0).mean()
    assert abs(kept - (1 - p)) < 4 * np.sqrt(p * (1 - p) / out.size)
    assert abs(out.mean() - 1) < 4 * np.sqrt(p / (1 - p) / out.size)


@pytest.mark.parametrize("p", [True, "0.5", None, 0.99999999])
def test_non_numbers_and_p_that_rounds_to_one_are_refused(p):
    with pytest.raises(ValueError, match="dropout probability"):
        SeededDropout(p, stream=1)


def test_masks_depend_on_the_seed_and_stream_not_on_layers_built_before():
    x = ms.Tensor(np.ones((64, 50), np.float32))

    def masks(stream):
        layer = SeededDropout(0.5, stream=stream)
        layer.set_train(True)
        return layer(x).asnumpy()

    first = masks(1)
    masks(2)  # another layer built and run in between
    np.testing.assert_array_equal(masks(1), first)
    assert (masks(2) != first).any()
