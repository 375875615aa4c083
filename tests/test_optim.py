"""Optimiser choice, learning-rate schedule and early stopping against hand-computed values.

The numpy reference is MindSpore's documented ``nn.Adam`` update (beta1 0.9, beta2 0.999,
eps 1e-8): ``w -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)``, with L2 decay
added to the gradient (``adam``) or the weights shrunk by ``1 - lr_t * weight_decay`` first
(``adamw``, Loshchilov & Hutter 2019, Algorithm 2).
"""

import math
from types import SimpleNamespace

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn
from test_training import fit, settings, train_stage  # noqa: F401 (a fixture)

from attention_clusters import checkpoints, device, resume, train_step
from attention_clusters.errors import UserError

device.init("CPU", seed=0)

W0 = np.array([1.0, -2.0, 3.0], np.float32)
INPUTS = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)


class LinearLoss(nn.Cell):
    """loss = sum(w * x): its gradient with respect to w is x, whatever w is."""

    def __init__(self):
        super().__init__()
        self.w = ms.Parameter(ms.Tensor(W0.copy()), name="w")

    def construct(self, x):
        return (self.w * x).sum()


def options(**kw):
    base = dict(lr=0.1, weight_decay=0.1, optimizer="adam", lr_schedule="constant", warmup_epochs=0, epochs=3)
    return SimpleNamespace(**{**base, **kw})


def reference(lrs, weight_decay, decoupled, w=W0, beta1=0.9, beta2=0.999, eps=1e-8):
    """Plain numpy Adam / AdamW over INPUTS (the gradients); returns w after each step."""
    w, m, v, out = w.astype(np.float64), 0.0, 0.0, []
    for t, (g, lr) in enumerate(zip(INPUTS.astype(np.float64), lrs), start=1):
        if decoupled:
            w = w * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * w
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        w = w - lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) * m / (np.sqrt(v) + eps)
        out.append(w)
    return out


def run_steps(p, steps, steps_per_epoch=2, cell=None):
    cell = cell or train_step.build_train_step(LinearLoss(), p, steps_per_epoch)
    seen = []
    for x in INPUTS[steps]:
        cell(ms.Tensor(x))
        seen.append(cell.network.w.asnumpy().copy())
    return cell, seen


def test_first_step_by_hand():
    """Step 1 of Adam moves every weight by lr against the sign of its (decayed) gradient."""
    g = INPUTS[0]
    _, (adam,) = run_steps(options(), slice(0, 1))
    np.testing.assert_allclose(adam, W0 - 0.1 * np.sign(g + 0.1 * W0), atol=1e-6)
    _, (adamw,) = run_steps(options(optimizer="adamw"), slice(0, 1))
    np.testing.assert_allclose(adamw, W0 * (1 - 0.1 * 0.1) - 0.1 * np.sign(g), atol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
@pytest.mark.parametrize("schedule, warmup", [("constant", 0), ("constant", 1), ("cosine", 1)])
def test_updates_match_numpy(optimizer, schedule, warmup):
    p = options(optimizer=optimizer, lr_schedule=schedule, warmup_epochs=warmup)
    lrs = train_step.lr_values(p, 2)
    lrs = [p.lr] * 6 if lrs is None else lrs
    _, seen = run_steps(p, slice(0, 6))
    np.testing.assert_allclose(seen, reference(lrs, 0.1, optimizer == "adamw"), rtol=1e-5, atol=1e-6)


def test_adam_and_adamw_differ_and_agree_without_decay():
    _, adam = run_steps(options(), slice(0, 6))
    _, adamw = run_steps(options(optimizer="adamw"), slice(0, 6))
    assert np.abs(adam[-1] - adamw[-1]).max() > 1e-2
    _, plain = run_steps(options(weight_decay=0.0), slice(0, 6))
    _, plain_w = run_steps(options(weight_decay=0.0, optimizer="adamw"), slice(0, 6))
    np.testing.assert_array_equal(plain[-1], plain_w[-1])


def test_resumed_adamw_schedule_continues_where_it_stopped(tmp_path):
    """The step counter travels in the checkpoint: 3 + 3 steps equal 6 straight."""
    p = options(optimizer="adamw", lr_schedule="cosine", warmup_epochs=1)
    first, _ = run_steps(p, slice(0, 3))
    checkpoints.save_checkpoint(first, tmp_path / "step.ckpt")
    again = train_step.build_train_step(LinearLoss(), p, 2)
    checkpoints.load_weights(again, tmp_path / "step.ckpt")
    _, resumed = run_steps(p, slice(3, 6), cell=again)
    _, straight = run_steps(p, slice(0, 6))
    np.testing.assert_allclose(resumed[-1], straight[-1], rtol=1e-6)


def test_summed_loss_weakens_l2_by_the_batch_size():
    """ModelZoo loss (summed over the batch) with L2 decay wd = mean loss with decay wd / batch."""
    rng = np.random.default_rng(1)
    x, y = ms.Tensor(rng.standard_normal((8, 4)).astype(np.float32)), ms.Tensor(rng.integers(0, 3, 8).astype(np.int32))

    def train(reduction, weight_decay):
        net = nn.Dense(4, 3, weight_init="ones", bias_init="zeros")
        loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction=reduction)
        step = train_step.build_train_step(nn.WithLossCell(net, loss), options(weight_decay=weight_decay), 1)
        for _ in range(5):
            step(x, y)
        return net.weight.asnumpy()

    summed = train("sum", 0.4)
    np.testing.assert_allclose(summed, train("mean", 0.05), rtol=1e-5, atol=1e-6)
    assert np.abs(summed - train("mean", 0.4)).max() > 1e-2


def test_lr_values_by_hand():
    assert train_step.lr_values(options(), 3) is None  # the ModelZoo's constant lr
    warm = train_step.lr_values(options(lr=0.6, warmup_epochs=1, epochs=2), 3)
    np.testing.assert_allclose(warm, [0.2, 0.4, 0.6, 0.6, 0.6, 0.6], rtol=1e-6)
    # T = 8 steps, W = 2: warm-up 1/2, 1; then (1 + cos(pi k / 6)) / 2 for k = 0..5
    cosine = train_step.lr_values(options(lr=1.0, lr_schedule="cosine", warmup_epochs=1, epochs=4), 2)
    np.testing.assert_allclose(cosine, [0.5, 1.0, 1.0, 0.9330127, 0.75, 0.5, 0.25, 0.0669873], rtol=1e-6)
    plain = train_step.lr_values(options(lr=1.0, lr_schedule="cosine", epochs=2), 2)
    np.testing.assert_allclose(plain, [1.0, 0.8535534, 0.5, 0.1464466], rtol=1e-6)
    with pytest.raises(UserError, match=r"warmup_epochs \(4\) must be smaller than epochs \(4\)"):
        train_step.lr_values(options(warmup_epochs=4, epochs=4), 2)


def test_logged_loss_is_per_sample_either_way(tmp_path):
    summed = fit(settings(1), tmp_path / "s")["history"][0]["train_loss"]
    mean = fit(settings(1, loss_reduction="mean"), tmp_path / "m")["history"][0]["train_loss"]
    assert 0 < summed < 7 and 0 < mean < 7 and abs(summed - mean) < 1  # <= ln 1024 = 6.93, not 32 times


def test_patience_stops_when_validation_stalls(tmp_path):
    """With a vanishing lr nothing improves after epoch 1: patience 2 stops after epoch 3."""
    stalled = fit(settings(6, lr=1e-12, patience=2), tmp_path / "a")
    assert stalled["epoch"] == 3 and stalled["best_epoch"] == 1
    assert fit(settings(6, lr=1e-12), tmp_path / "b")["epoch"] == 6  # patience 0: every epoch
    again = fit(settings(8, lr=1e-12, patience=2), tmp_path / "a")  # resumed: stops at once
    assert again["epoch"] == 3


def test_schedule_settings_are_in_the_fingerprint(train_stage):  # noqa: F811 (the imported fixture)
    base = resume.fingerprint(settings(5), 1, "fused")
    for change in (
        {"loss_reduction": "mean"},
        {"optimizer": "adamw"},
        {"lr_schedule": "cosine"},
        {"warmup_epochs": 1},
        {"patience": 3},
    ):
        assert resume.fingerprint(settings(5, **change), 1, "fused") != base, change
    assert resume.fingerprint(settings(9), 1, "fused") == base  # constant lr: epochs may grow
    for per_step in ({"lr_schedule": "cosine"}, {"warmup_epochs": 1}):  # the schedule's length is saved
        longer, shorter = (resume.fingerprint(settings(e, **per_step), 1, "fused") for e in (9, 5))
        assert longer != shorter
