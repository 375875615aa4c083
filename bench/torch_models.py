"""PyTorch versions of the SPEC 5 extractor and the SPEC 6 Attention Cluster, for bench/speed.py.

What a user would otherwise pick: the same networks in PyTorch (CPU), batched like ours.
Only imported when torch is installed (``pip install -r bench/requirements.txt``).
"""

import itertools
import math

import numpy as np
import torch
from timing import median_rate
from torch import nn
from torch.nn import functional as F


class TorchExtractor(nn.Module):
    """SPEC 5: uint8 (N, 28, 28) -> (N, 50) log-softmax features, plus the 50->11 training head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 5)
        self.channel_dropout = nn.Dropout2d(0.5)
        self.fc1 = nn.Linear(320, 50)
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(50, 11)

    def features(self, frames):
        x = (frames[:, None].float() / 255.0 - 0.1307) / 0.3081  # SPEC 1
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
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


def train_rate(model, x, y, seconds, loss_fn):
    """Training samples/s of Adam steps on one batch (:func:`timing.median_rate`); x, y numpy."""
    x, y = torch.from_numpy(x), torch.from_numpy(y).long()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()

    def step():
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()

    step()
    return median_rate(step, len(x), seconds)


def extract_rate(extractor, videos, batch_frames, seconds):
    """Frames/s of the feature stage's loop in PyTorch: uint8 numpy frames in, float32 numpy
    features written to an array, ``batch_frames`` a pass (:func:`timing.median_rate`)."""
    frames = videos.reshape(-1, 28, 28)
    out = np.empty((len(frames), 50), np.float32)
    passes = itertools.count()
    extractor.eval()

    def one_pass():
        lo = next(passes) % (len(frames) // batch_frames) * batch_frames
        with torch.no_grad():
            out[lo : lo + batch_frames] = extractor.features(torch.from_numpy(frames[lo : lo + batch_frames])).numpy()

    one_pass()
    return median_rate(one_pass, batch_frames, seconds)


def rate(figure, data, seconds, threads, batch_frames):
    """One PyTorch figure of bench/speed.py ("ac_FC_NATT", "extractor_train" or "extract") on
    the same numpy ``data`` as ours: samples/s or frames/s."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    if figure.startswith("ac_"):
        fc, natt = (int(v) for v in figure.split("_")[1:])
        return train_rate(TorchAttentionCluster(50, natt, fc), *data, seconds, F.cross_entropy)
    if figure == "extractor_train":
        return train_rate(TorchExtractor(), *data, seconds, F.nll_loss)
    return extract_rate(TorchExtractor(), data, batch_frames, seconds)
