"""One optimiser step of the Attention Cluster: loss, dropout masks, Adam or AdamW, lr schedule.

Loss (``loss_reduction``): ``sum`` differentiates the sum of the batch's per-sample
cross-entropies, as the ModelZoo's train.py does (``nn.SoftmaxCrossEntropyWithLogits(sparse=True)``
has ``reduction='none'``, and ``TrainOneStepCell`` back-propagates a vector of ones through it);
``mean`` differentiates their mean. Adam's step does not depend on the gradient's scale (up to
its eps), but its L2 weight decay does: under ``mean`` a weight decay acts batch_size times as
strongly as the same figure in the ModelZoo.

Dropout masks are drawn on the host, one generator per (seed, epoch, rank), and fed to the step
with the batch (:class:`DropoutMasks`): every step's mask depends on those and the step's
place in the epoch only, so a run resumed after any epoch draws the masks of an uninterrupted
one (the random kernels of MindSpore keep a state that a checkpoint does not save).

Optimiser (``optimizer``): ``adam`` is MindSpore's ``nn.Adam`` with its L2 weight decay on every
parameter (the gradient gets ``weight_decay * w`` added before the moments), as the ModelZoo's
train.py builds it; ``adamw`` decouples the decay from the moments (Loshchilov & Hutter,
"Decoupled Weight Decay Regularization", ICLR 2019): ``w <- w * (1 - lr_t * weight_decay)``, then
the Adam step on the bare gradient. Learning rate (``lr_schedule``, ``warmup_epochs``): see
:func:`lr_values`.
"""

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from .errors import UserError


class MaskedCrossEntropy(nn.Cell):
    """The training loss of an :class:`~models.attention_cluster.AttentionCluster` with dropout.

    Inputs: x float32 (N, L, F); y int32 (N,) class indices; keep float32 (N, net.width), the
    dropout mask already scaled (0 or 1 / P(keep), :class:`DropoutMasks`). Output: float32
    scalar, the sum (``reduction="sum"``) or mean of the per-sample cross-entropies
    ``-log softmax(logits)[y]``. With ``softmax_nll`` None they are computed as log-softmax and
    a gather in MindSpore's kernels (fewer and faster than ``nn.SoftmaxCrossEntropyWithLogits``);
    else ``softmax_nll(h W^T, b, y)`` (``fused_ops.FusedOps.softmax_nll``) computes them from
    the classifier's product without its bias. Equal up to float32 rounding.
    """

    def __init__(self, net, reduction, softmax_nll=None):
        super().__init__(auto_prefix=False)  # parameters keep the network's names (checkpoints)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"loss reduction must be 'sum' or 'mean', got {reduction!r}")
        self.net, self.sum, self.softmax_nll = net, reduction == "sum", softmax_nll
        self.product = ops.MatMul(transpose_b=True)

    def construct(self, x, y, keep):
        h = self.net.pool(x) * keep
        if self.softmax_nll is None:
            nll = -ops.gather_elements(ops.log_softmax(self.net.classifier(h), -1), 1, y.reshape(-1, 1))
        else:
            nll = self.softmax_nll(self.product(h, self.net.classifier.weight), self.net.classifier.bias, y)
        return nll.sum() if self.sum else nll.mean()


class DropoutMasks:
    """Inverted-dropout masks for one epoch of one rank, drawn on the host.

    Each call returns the next step's mask: float32 (batch, width), every element independently
    ``1 / (1 - p)`` with probability ``1 - p`` and 0 otherwise (an element is kept when a
    float32 uniform draw in [0, 1) is >= p). The draws come from
    ``numpy.random.default_rng([seed, epoch, rank, 1])`` (the shuffle uses ``[seed, epoch]``),
    so the k-th mask of an epoch is a function of (seed, epoch, rank, k) alone.

    Args:
        p: drop probability in [0, 1); seed, epoch, rank: ints >= 0; batch, width: mask shape.
    """

    def __init__(self, p, seed, epoch, rank, batch, width):
        # the trailing 1 keeps rank 0's stream apart from the shuffle's [seed, epoch] (numpy pads
        # a shorter seed with zeros: [s, e] and [s, e, 0, 0] seed the same stream)
        self.rng = np.random.default_rng([seed, epoch, rank, 1])
        self.p, self.shape = float(p), (batch, width)
        self.scale = np.float32(1 / (1 - self.p))

    def __call__(self):
        return (self.rng.random(self.shape, dtype=np.float32) >= self.p) * self.scale


def lr_varies(p):
    """Whether the learning rate changes per step (a cosine schedule or warm-up): then
    :func:`lr_values` depends on ``p.epochs`` and is saved with the optimiser's state."""
    return p.lr_schedule != "constant" or p.warmup_epochs > 0


def lr_values(p, steps_per_epoch):
    """The learning rate of every optimiser step, or None for a constant ``p.lr`` (the ModelZoo's).

    With T = ``p.epochs * steps_per_epoch`` steps, W = ``p.warmup_epochs * steps_per_epoch``
    warm-up steps and step s = 0..T-1:

    * warm-up (s < W): ``lr * (s + 1) / W``, linear (Goyal et al. 2017, "Accurate, Large
      Minibatch SGD", section 2.2);
    * then ``constant``: ``lr``; ``cosine``: ``lr * (1 + cos(pi * (s - W) / (T - W))) / 2``,
      from lr towards 0 at the end of the run (Loshchilov & Hutter 2017, SGDR, eq. 5 with
      eta_min = 0 and one cycle).

    Returns:
        float32 (T,) or None (constant, no warm-up).

    Raises:
        UserError: warmup_epochs is not smaller than epochs.
    """
    if not lr_varies(p):
        return None
    if p.warmup_epochs >= p.epochs:
        raise UserError(f"params.yaml: warmup_epochs ({p.warmup_epochs}) must be smaller than epochs ({p.epochs})")
    total, warm = p.epochs * steps_per_epoch, p.warmup_epochs * steps_per_epoch
    step = np.arange(total, dtype=np.float64)
    scale = np.ones(total)
    if p.lr_schedule == "cosine":
        scale = (1 + np.cos(np.pi * (step - warm) / (total - warm))) / 2
    if warm:
        scale[:warm] = (step[:warm] + 1) / warm
    return (p.lr * scale).astype(np.float32)


class DecoupledDecayStep(nn.TrainOneStepCell):
    """One training step with decoupled weight decay (AdamW) around an optimiser without decay.

    Per step t: gradients g of the loss at w; then ``w <- w * (1 - lr_t * weight_decay)`` for every
    parameter the optimiser updates; then the optimiser's step with g. ``lr_t`` is
    ``lr_per_step[t]`` (the last value beyond the end), t the optimiser's ``global_step``, which
    the checkpoint keeps, so a resumed run decays as an uninterrupted one.

    Args:
        network: a cell returning the loss; optimizer: e.g. ``nn.Adam`` with weight_decay 0.
        lr_per_step: float sequence, the optimiser's learning rate of each step (length >= 1).
        weight_decay: lambda >= 0.
    """

    def __init__(self, network, optimizer, lr_per_step, weight_decay):
        super().__init__(network, optimizer)
        self.lr_per_step = ms.Tensor(np.asarray(lr_per_step, dtype=np.float32))
        self.last_step = ms.Tensor(len(lr_per_step) - 1, ms.int32)
        self.weight_decay = float(weight_decay)

    def construct(self, *inputs):
        loss = self.network(*inputs)
        grads = self.grad_reducer(self.grad_no_sens(self.network, self.weights)(*inputs))
        step = ops.minimum(self.optimizer.global_step, self.last_step)
        keep = 1 - ops.gather(self.lr_per_step, step, 0) * self.weight_decay
        for weight in self.weights:
            ops.assign(weight, weight * keep)
        return ops.depend(loss, self.optimizer(grads))


def build_train_step(loss, p, steps_per_epoch):
    """The training step cell minimising ``loss`` (a Cell returning the loss, e.g.
    :class:`MaskedCrossEntropy`) with the optimiser of the params ``p``.

    The step takes the inputs of ``loss`` and returns the loss. ``adam`` (or no decay):
    ``nn.TrainOneStepCell`` with
    ``nn.Adam(weight_decay=...)``, L2 added to the gradient of every trainable parameter (the
    ModelZoo's); ``adamw``: :class:`DecoupledDecayStep` around ``nn.Adam`` without decay. The
    learning rate is ``p.lr`` or, with a schedule, :func:`lr_values`.

    Raises:
        UserError: see :func:`lr_values`.
    """
    params = loss.trainable_params()
    schedule = lr_values(p, steps_per_epoch)
    lr = p.lr if schedule is None else ms.Tensor(schedule)
    if p.optimizer == "adam" or p.weight_decay == 0:
        return nn.TrainOneStepCell(loss, nn.Adam(params, learning_rate=lr, weight_decay=p.weight_decay))
    per_step = [p.lr] if schedule is None else schedule
    return DecoupledDecayStep(loss, nn.Adam(params, learning_rate=lr), per_step, p.weight_decay)
