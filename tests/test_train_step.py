"""The training step's pieces against plain numpy: host dropout masks and the masked cross-entropy."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from attention_clusters import device
from attention_clusters.train_step import DropoutMasks, MaskedCrossEntropy
from attention_clusters.trained_model import build_model

device.init("CPU", seed=0)


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_masks_keep_one_minus_p_scaled_and_depend_on_seed_epoch_rank_step(p):
    masks = DropoutMasks(p, seed=1, epoch=3, rank=0, batch=500, width=400)
    first, second = masks(), masks()
    assert first.dtype == np.float32 and first.shape == (500, 400)
    assert set(np.unique(first)) == {0.0, np.float32(1 / (1 - p))}
    kept = (first != 0).mean()
    assert abs(kept - (1 - p)) < 4 * np.sqrt(p * (1 - p) / first.size)
    assert (first != second).any()  # a new mask every step
    again = DropoutMasks(p, seed=1, epoch=3, rank=0, batch=500, width=400)
    np.testing.assert_array_equal(again(), first)  # a function of (seed, epoch, rank, step)
    for other in ({"seed": 2}, {"epoch": 4}, {"rank": 1}):
        args = {"seed": 1, "epoch": 3, "rank": 0} | other
        assert (DropoutMasks(p, **args, batch=500, width=400)() != first).any(), other


def test_masked_loss_is_the_cross_entropy_of_the_masked_network():
    """sum / mean of -log softmax(logits)[y], logits = classifier(pool(x) * keep), in float64 numpy."""
    net = build_model(1, 2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 25, 50)).astype(np.float32)
    y = rng.integers(0, 1024, 16).astype(np.int32)
    keep = DropoutMasks(0.5, 0, 1, 0, 16, net.width)()
    pooled = net.pool(ms.Tensor(x)).asnumpy().astype(np.float64)
    w, b = net.classifier.weight.asnumpy().astype(np.float64), net.classifier.bias.asnumpy().astype(np.float64)
    logits = (pooled * keep) @ w.T + b
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    nll = -logp[np.arange(16), y]
    inputs = ms.Tensor(x), ms.Tensor(y), ms.Tensor(keep)
    np.testing.assert_allclose(MaskedCrossEntropy(net, "sum")(*inputs).asnumpy(), nll.sum(), rtol=1e-5)
    np.testing.assert_allclose(MaskedCrossEntropy(net, "mean")(*inputs).asnumpy(), nll.mean(), rtol=1e-5)
    ones = ms.Tensor(np.ones_like(keep))
    reference = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="sum")(net(ms.Tensor(x)), ms.Tensor(y))
    np.testing.assert_allclose(
        MaskedCrossEntropy(net, "sum")(ms.Tensor(x), ms.Tensor(y), ones).asnumpy(), reference.asnumpy(), rtol=1e-6
    )
    with pytest.raises(ValueError, match="loss reduction must be 'sum' or 'mean'"):
        MaskedCrossEntropy(net, "none")
