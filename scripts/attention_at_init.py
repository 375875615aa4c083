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

Raises (as one line): the features file is missing or not float32 (N, L, F); --videos or --natt < 1.
"""

import argparse

import mindspore as ms
import numpy as np
import pandas as pd
from mindspore.common.initializer import Normal, Zero, initializer

from attention_clusters import cli, storage
from attention_clusters.errors import UserError
from attention_clusters.trained_model import build_model

SATURATED = 2.0  # |tanh input| above which tanh' < 0.071


def modelzoo_init(net):
    """Re-draw every dense weight N(0, 0.01) and zero every dense bias, in place (MindSpore 1.x's
    ``nn.Dense``/``nn.Conv1d`` defaults, which the ModelZoo port kept)."""
    for param in net.get_parameters():
        if param.name.endswith(".weight"):
            param.set_data(initializer(Normal(0.01), param.shape, ms.float32))
        elif param.name.endswith(".bias"):
            param.set_data(initializer(Zero(), param.shape, ms.float32))


def statistics(net, x):
    """dict of the attention statistics above for ``net``'s first cluster on float32 (N, L, F) x."""
    cluster = net.clusters[0]
    scores = cluster.score(x).asnumpy().transpose(0, 2, 1).astype(np.float64)  # (N, C, L)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    entropy = -(weights * np.log(np.maximum(weights, 1e-30))).sum(-1) / np.log(scores.shape[-1])
    row = {
        "entropy / log L": entropy.mean(),
        "max weight": weights.max(-1).mean(),
        "score std over frames": scores.std(-1).mean(),
    }
    if cluster.fc == 2:
        hidden_input = cluster.score[0](x).asnumpy()
        row["tanh saturated"] = (np.abs(hidden_input) > SATURATED).mean()
    return row


def run():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="data/features/val.npy", help="float32 (N, L, F) .npy")
    parser.add_argument("--videos", type=int, default=2048, help="first videos of the file to use")
    parser.add_argument("--natt", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    if args.videos < 1 or args.natt < 1:
        raise UserError(f"--videos and --natt must be >= 1, got {args.videos} and {args.natt}")
    features = storage.load_npy(args.features, mmap=True, ndim=3)[: args.videos]
    if features.dtype != np.float32:
        raise UserError(f"{args.features}: expected float32 features (N, L, F), got {features.dtype}")
    x = ms.Tensor(np.ascontiguousarray(features))
    rows = []
    for fc in (1, 2):
        for init in ("ours", "modelzoo"):
            for seed in args.seeds:
                ms.set_seed(seed)
                net = build_model(fc, args.natt, (features.shape[2],))
                if init == "modelzoo":
                    modelzoo_init(net)
                rows.append({"fc": fc, "init": init, "seed": seed, **statistics(net, x)})
    table = pd.DataFrame(rows)
    print(f"{args.features}: {x.shape[0]} videos, L={x.shape[1]}, F={x.shape[2]}, natt={args.natt}; uniform = 1 / L")
    print(f"feature values: mean {features.mean():.2f}, range {features.min():.2f} .. {features.max():.4f}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return "done"


if __name__ == "__main__":
    cli.main("attention_at_init", run, check_inputs=False)
