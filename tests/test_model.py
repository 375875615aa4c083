"""The Attention Cluster forward pass against a plain-numpy transcription of SPEC 6."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

import attention_clusters
from attention_clusters import device
from attention_clusters.models.attention_cluster import AttentionCluster, AttentionWeights

device.init("CPU", seed=0)


def reference_cluster(x, params, prefix, fc, natt):
    """SPEC 6, one stream, in numpy: x (N, L, F) -> (N, C*F)."""
    if fc == 1:
        scores = x @ params[f"{prefix}.score.weight"].T + params[f"{prefix}.score.bias"]
    else:
        hidden = np.tanh(x @ params[f"{prefix}.score.0.weight"].T + params[f"{prefix}.score.0.bias"])
        scores = hidden @ params[f"{prefix}.score.2.weight"].T + params[f"{prefix}.score.2.bias"]
    scores = scores.transpose(0, 2, 1)  # (N, C, L)
    a = np.exp(scores - scores.max(axis=-1, keepdims=True))
    a /= a.sum(axis=-1, keepdims=True)
    out = []
    for k in range(natt):  # the per-unit loop the model avoids
        v = np.einsum("nl,nlf->nf", a[:, k], x)
        o = params[f"{prefix}.shift_w"][0, k, 0] * v + params[f"{prefix}.shift_b"][0, k, 0]
        out.append(o / np.linalg.norm(o, axis=-1, keepdims=True) / np.sqrt(natt))
    return np.concatenate(out, axis=-1), a


def numpy_params(net):
    return {p.name: p.asnumpy().astype(np.float64) for p in net.get_parameters()}


@pytest.mark.parametrize("fc, natt", [(1, 1), (1, 8), (2, 3), (2, 32)])
def test_forward_matches_numpy(fc, natt):
    import mindspore as ms

    net = AttentionCluster((50,), natt=natt, fc=fc)
    net.set_train(False)
    x = np.random.default_rng(natt).standard_normal((6, 25, 50)).astype(np.float32)
    params = numpy_params(net)
    pooled, a = reference_cluster(x.astype(np.float64), params, "clusters.0", fc, natt)
    expected = pooled @ params["classifier.weight"].T + params["classifier.bias"]
    got = net(ms.Tensor(x)).asnumpy()
    assert got.shape == (6, 1024)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(AttentionWeights(net)(ms.Tensor(x)).asnumpy(), a, atol=1e-6)


def test_two_streams_are_concatenated():
    import mindspore as ms

    net = AttentionCluster((50, 20), natt=4, fc=2)
    net.set_train(False)
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((3, 25, 50)).astype(np.float32)
    x2 = rng.standard_normal((3, 25, 20)).astype(np.float32)
    params = numpy_params(net)
    p1, _ = reference_cluster(x1.astype(np.float64), params, "clusters.0", 2, 4)
    p2, _ = reference_cluster(x2.astype(np.float64), params, "clusters.1", 2, 4)
    expected = np.concatenate([p1, p2], axis=-1) @ params["classifier.weight"].T + params["classifier.bias"]
    assert params["classifier.weight"].shape == (1024, 4 * 70)
    np.testing.assert_allclose(net(ms.Tensor(x1), ms.Tensor(x2)).asnumpy(), expected, atol=1e-5, rtol=1e-5)


def test_shift_init_std_follows_spec():
    net = AttentionCluster((50,), natt=4096, fc=1)
    w = net.clusters[0].shift_w.asnumpy()
    assert abs(w.std() - np.sqrt(1 / np.sqrt(4096))) < 0.02


def test_bad_shape_arguments():
    with pytest.raises(ValueError, match="fc"):
        AttentionCluster((50,), natt=2, fc=3)
    with pytest.raises(ValueError, match="natt"):
        AttentionCluster((50,), natt=0, fc=1)


EAGER = """
import json, sys
import mindspore as ms
import numpy as np
from attention_clusters import checkpoints, trained_model
ms.set_device("CPU")  # PyNative: MindSpore's default mode, as in a notebook
ms.set_seed(0)
checkpoints.save_checkpoint(trained_model.build_model(2, 4), sys.argv[1])
config = {"fc": 2, "natt": 4, "feature_dims": [50], "num_classes": 1024}
open(sys.argv[1][:-5] + ".json", "w").write(json.dumps(config))
net, _ = trained_model.load_model(sys.argv[1])
net.set_train(False)
x = ms.Tensor(np.random.default_rng(0).standard_normal((3, 25, 50)).astype(np.float32))
eager = net(x).asnumpy()
ms.set_context(mode=ms.GRAPH_MODE)
graph = net(x).asnumpy()
print(json.dumps({"shape": list(eager.shape), "max_diff": float(np.abs(eager - graph).max())}))
"""


def pinned(package):
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.startswith(f"{package}=="):
            return line.split("#")[0].split("==")[1].strip()
    return None


@pytest.mark.skipif(
    np.__version__ != pinned("numpy"),
    reason=f"numpy {np.__version__} is not the pinned {pinned('numpy')}: run test.sh (it installs the pins)",
)
def test_checkpoint_runs_eagerly_in_pynative_mode(tmp_path):
    """A user loads our checkpoint in MindSpore's default (PyNative) mode and runs it."""
    env = dict(os.environ, PYTHONPATH=str(Path(attention_clusters.__file__).parents[1]))
    result = subprocess.run(
        [sys.executable, "-c", EAGER, str(tmp_path / "model.ckpt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "compiled using NumPy 1.x" not in result.stderr and "Numpy init failed" not in result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [3, 1024] and report["max_diff"] < 1e-5
