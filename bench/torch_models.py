"""PyTorch versions of the SPEC 5 extractor and the SPEC 6 Attention Cluster, for bench/speed.py.

What a user would otherwise pick: the same networks in PyTorch (CPU), batched like ours.
Only imported when torch is installed (``pip install -r bench/requirements-torch.txt``).
"""

import math
import time

import torch
from torch import nn
from torch.nn import functional as F


class TorchExtractor(nn.Module):
    """SPEC 5: (N, 28, 28) -> (N, 50) log-softmax features, plus the 50->11 training head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 5)
        self.channel_dropout = nn.Dropout2d(0.5)
        self.fc1 = nn.Linear(320, 50)
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(50, 11)

    def features(self, frames):
        x = F.relu(F.max_pool2d(self.conv1(frames[:, None]), 2))
        x = F.relu(F.max_pool2d(self.channel_dropout(self.conv2(x)), 2))
        return F.log_softmax(self.dropout(F.relu(self.fc1(x.flatten(1)))), dim=-1)

    def forward(self, frames):
        return F.log_softmax(self.head(self.features(frames)), dim=-1)


class TorchAttentionCluster(nn.Module):
    """SPEC 6, all units in one batched product: (N, L, F) -> (N, 1024) logits."""

    def __init__(self, feature_dim, natt, fc):
        super().__init__()
        if fc == 1:
            self.score = nn.Linear(feature_dim, natt)
        else:
            self.score = nn.Sequential(nn.Linear(feature_dim, 128), nn.Tanh(), nn.Linear(128, natt))
        std = math.sqrt(1 / math.sqrt(natt))
        self.shift_w = nn.Parameter(torch.randn(1, natt, 1) * std)
        self.shift_b = nn.Parameter(torch.randn(1, natt, 1) * std)
        self.scale = 1 / math.sqrt(natt)
        self.dropout = nn.Dropout(0.5)
        self.classifier = nn.Linear(natt * feature_dim, 1024)

    def forward(self, x):
        a = torch.softmax(self.score(x).transpose(1, 2), dim=-1)  # (N, C, L)
        o = self.shift_w * torch.bmm(a, x) + self.shift_b
        o = F.normalize(o, dim=-1) * self.scale
        return self.classifier(self.dropout(o.flatten(1)))


def train_rate(model, x, y, steps, loss_fn):
    """Training samples/s of ``steps`` Adam steps on one batch (after one warm-up step)."""
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()

    def step():
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(x) / (time.perf_counter() - start)


def figures(steps, threads, ac_configs, batch, extract_frames):
    """PyTorch figures keyed like bench/speed.py's own: samples/s and frames/s."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    out = {}
    x = torch.randn(batch, 25, 50)
    y = torch.randint(0, 1024, (batch,))
    for fc, natt in ac_configs:
        out[f"ac_{fc}_{natt}"] = train_rate(TorchAttentionCluster(50, natt, fc), x, y, steps, F.cross_entropy)
    frames = torch.randn(batch, 28, 28)
    labels = torch.randint(0, 11, (batch,))
    extractor = TorchExtractor()
    out["extractor_train"] = train_rate(extractor, frames, labels, steps * 4, F.nll_loss)
    extractor.eval()
    many = torch.randn(extract_frames, 28, 28)
    with torch.no_grad():
        extractor.features(many)
        start = time.perf_counter()
        for _ in range(3):
            extractor.features(many)
    out["extract"] = 3 * extract_frames / (time.perf_counter() - start)
    return out
