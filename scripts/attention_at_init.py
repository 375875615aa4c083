"""How peaked the Attention Cluster's attention is before training, on real features.

    python scripts/attention_at_init.py [--features data/features/val.npy] [--videos 2048]
        [--natt 1] [--seeds 1 2 3]

Builds the model as the train stage does (``ms.set_seed(seed)``, then ``build_model``) for
fc=1 and fc=2, once with our initialisation (uniform +-1/sqrt(fan_in), ``models/init.py``) and
once with the ModelZoo's MindSpore 1.x one (dense weights N(0, 0.01), zero biases), and prints
per case, over the first ``--videos`` videos: the attention's entropy over the L frames divided
by log(L) (1 = uniform weights, i.e. mean pooling), the largest weight of a video (1/L when
uniform), the standard deviation of the scores across a video's frames, and for fc=2 the
fraction of the hidden tanh units whose input exceeds 2 in magnitude (saturated). Used in
docs/results.md ("Why fc=2 natt=1 is slow").

Raises (as one line): the features file is missing, a folder, not a float32 (N, L, F) array with
N, L, F >= 1, or holds NaN / inf; --videos < 1; --natt or a seed outside params.yaml's range
(natt 1..4096, seed 0..2**32-1). Nothing is printed before the inputs are checked.
"""

import argparse
from pathlib import Path

import mindspore as ms
import numpy as np
import pandas as pd
from mindspore.common.initializer import Normal, Zero, initializer

from attention_clusters import cli, storage
from attention_clusters.errors import UserError
from attention_clusters.params import Params
from attention_clusters.trained_model import build_model

SATURATED = 2.0  # |tanh input| above which tanh' < 0.071
CHUNK = 256  # videos scored at once: bounds the (N, C, L) float64 arrays at large natt


def modelzoo_init(net):
    """Re-draw every dense weight N(0, 0.01) and zero every dense bias, in place (MindSpore 1.x's
    ``nn.Dense``/``nn.Conv1d`` defaults, which the ModelZoo port kept)."""
    for param in net.get_parameters():
        if param.name.endswith(".weight"):
            param.set_data(initializer(Normal(0.01), param.shape, ms.float32))
        elif param.name.endswith(".bias"):
            param.set_data(initializer(Zero(), param.shape, ms.float32))


def statistics(net, features):
    """dict of the attention statistics above for ``net``'s first cluster on float32 (N, L, F)
    ``features``, scored ``CHUNK`` videos at a time."""
    cluster = net.clusters[0]
    entropy, max_weight, score_std, saturated = [], [], [], 0
    for begin in range(0, len(features), CHUNK):
        x = ms.Tensor(features[begin : begin + CHUNK])
        if cluster.fc == 2:  # the hidden layer's inputs once: for the saturation and the scores
            hidden = cluster.score[0](x)
            saturated += int((np.abs(hidden.asnumpy()) > SATURATED).sum())
            scores = cluster.score[2](cluster.score[1](hidden))
        else:
            scores = cluster.score(x)
        scores = scores.asnumpy().transpose(0, 2, 1).astype(np.float64)  # (n, C, L)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        entropy.append(-(weights * np.log(np.maximum(weights, 1e-30))).sum(-1) / np.log(scores.shape[-1]))
        max_weight.append(weights.max(-1))
        score_std.append(scores.std(-1))
    row = {
        "entropy / log L": np.concatenate(entropy).mean(),
        "max weight": np.concatenate(max_weight).mean(),
        "score std over frames": np.concatenate(score_std).mean(),
    }
    if cluster.fc == 2:
        row["tanh saturated"] = saturated / (features.shape[0] * features.shape[1] * cluster.score[0].out_channels)
    return row


def bounds(key):
    """``(low, high)`` of the integer ``key`` of params.yaml, as its schema (params.py) bounds it."""
    limits = {type(m).__name__: m for m in Params.model_fields[key].metadata}
    return limits["Ge"].ge, limits["Le"].le


def load_features(path, videos):
    """The first ``videos`` videos of the features file ``path``: native float32 (N, L, F), finite.

    Raises:
        UserError: naming the file and what it holds instead.
    """
    if Path(path).is_dir():
        raise UserError(f"{path}: a folder; expected a float32 (N, L, F) .npy features file")
    features = storage.load_npy(path, mmap=True, ndim=3)[:videos]
    if features.dtype.kind != "f" or features.dtype.itemsize != 4:
        raise UserError(f"{path}: expected float32 features (N, L, F), got {features.dtype}")
    if 0 in features.shape:
        raise UserError(f"{path}: expected float32 features (N, L, F) with N, L, F >= 1, got shape {features.shape}")
    features = np.ascontiguousarray(features, dtype=np.float32)  # also native byte order
    if not np.isfinite(features).all():
        raise UserError(f"{path}: the first {len(features)} videos hold NaN or inf values")
    return features


def run():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="data/features/val.npy", help="float32 (N, L, F) .npy")
    parser.add_argument("--videos", type=int, default=2048, help="first videos of the file to use")
    parser.add_argument("--natt", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    if args.videos < 1:
        raise UserError(f"--videos {args.videos}: expected an integer >= 1")
    low, high = bounds("natt")
    if not low <= args.natt <= high:
        raise UserError(f"--natt {args.natt}: expected an integer in {low}..{high} (as params.yaml's natt)")
    low, high = bounds("seed")
    bad = [seed for seed in args.seeds if not low <= seed <= high]
    if bad:
        raise UserError(
            f"--seeds {' '.join(map(str, bad))}: expected integers in {low}..{high} (as params.yaml's seed)"
        )
    features = load_features(args.features, args.videos)
    rows = []
    for fc in (1, 2):
        for init in ("ours", "modelzoo"):
            for seed in args.seeds:
                ms.set_seed(seed)
                net = build_model(fc, args.natt, (features.shape[2],))
                if init == "modelzoo":
                    modelzoo_init(net)
                rows.append({"fc": fc, "init": init, "seed": seed, **statistics(net, features)})
    table = pd.DataFrame(rows)
    n, length, width = features.shape
    print(f"{args.features}: {n} videos, L={length}, F={width}, natt={args.natt}; uniform = 1 / L")
    print(f"feature values: mean {features.mean():.2f}, range {features.min():.2f} .. {features.max():.4f}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return "done"


if __name__ == "__main__":
    cli.main("attention_at_init", run, check_inputs=False)
