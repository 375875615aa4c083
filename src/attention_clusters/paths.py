"""Where each stage reads and writes, relative to the repository root (mirrors dvc.yaml)."""

from pathlib import Path

DATA = Path("data")
MNIST = DATA / "mnist"
SOURCE_JSON = MNIST / "source.json"
SAMPLERS = DATA / "sample" / "samplers.npz"
NOISY = DATA / "noisy"
FLASH = DATA / "flash"
FLASH_PREVIEW = FLASH / "preview.png"
FEATURES = DATA / "features"
MODELS = Path("models")
EXTRACTOR = MODELS / "extractor.ckpt"
MODEL = MODELS / "attention_cluster.ckpt"  # config beside it: attention_cluster.json
TRAIN_STATE = MODELS / "train_state"  # resumable state, reused only for the same inputs (resume.fingerprint)
TRAIN_LOGS = MODELS / "train_logs"  # per-worker logs of distributed training
PREDICTIONS = MODELS / "test_predictions.npy"  # eval's top-1 class per test video, for infer to match
DVCLIVE = Path("dvclive")
PLOTS = Path("plots")
ATTENTION_PNG = PLOTS / "attention.png"
INFER = DATA / "infer"  # 310 flow: input/*.bin, labels.bin, result/*.bin
METRICS = Path("metrics")


def noisy_file(split, what):
    """Noisy-MNIST array path: ``what`` is ``frames`` (uint8 (N, 28, 28)) or ``labels`` (uint8 (N,))."""
    return NOISY / f"{split}_{what}.npy"


def flash_file(split, what):
    """Flash-MNIST array path: ``what`` is ``videos`` (uint8 (N, 25, 28, 28)) or ``labels`` (uint16 (N,))."""
    return FLASH / f"{split}_{what}.npy"


def feature_file(split):
    """Flash-MNIST feature path: float32 (N, 25, 50) log-softmax frame features."""
    return FEATURES / f"{split}.npy"
