"""The trained Attention Cluster as the later stages see it: built, published, loaded."""

import shutil
from pathlib import Path

from . import recovery
from .checkpoints import load_weights
from .errors import UserError
from .models.attention_cluster import NUM_CLASSES, AttentionCluster
from .storage import atomic_path, read_json, write_json

EVAL_BATCH = 1024  # videos per forward pass when evaluating (validation, eval, predict)


def build_model(fc, natt, feature_dims=(50,), fused=None):
    """The Attention Cluster for Flash-MNIST (1,024 classes); ``fused``: see
    :class:`~models.attention_cluster.ShiftingAttention` (None: MindSpore's own kernels)."""
    return AttentionCluster(tuple(feature_dims), natt=natt, fc=fc, num_classes=NUM_CLASSES, fused=fused)


def model_config(p, feature_dims):
    """What a checkpoint must be loaded into: written beside it as JSON."""
    return {"fc": p.fc, "natt": p.natt, "feature_dims": list(feature_dims), "num_classes": NUM_CLASSES}


def publish(state_dir, model_path, config, state):
    """Copy the best checkpoint to ``model_path`` and write its config JSON beside it.

    The JSON (``<model_path>.json`` with suffix replaced) holds fc, natt, feature_dims,
    num_classes, the selected epoch, the epochs run, ``train_minutes`` (training time without
    validation) and, when the history holds ``test_top1`` (``report_test``), the best test top-1
    of any epoch and its epoch (the ModelZoo's protocol, reported beside ours); loaders check it
    before building the network.
    """
    with atomic_path(model_path) as tmp:
        shutil.copyfile(Path(state_dir) / state["best"], tmp)
    info = dict(config, best_epoch=state["best_epoch"], best_val_top1=state["best_val_top1"], epochs=state["epoch"])
    info["train_minutes"] = round(sum(h["epoch_time_s"] for h in state["history"]) / 60, 3)  # excl. validation
    tested = [h for h in state["history"] if "test_top1" in h]
    if tested:
        best = max(tested, key=lambda h: h["test_top1"])
        info["best_test_top1_any_epoch"], info["best_test_epoch"] = best["test_top1"], best["epoch"]
    write_json(Path(model_path).with_suffix(".json"), info)


def load_model(model_path, expect=None):
    """Build the network described by ``<model_path>.json`` and load the checkpoint into it.

    Args:
        expect: optional dict of config values (e.g. ``{"fc": 1, "natt": 8}``) that must match.

    Returns:
        ``(net, config)``.

    Raises:
        UserError: the JSON or checkpoint is missing, the config disagrees with ``expect``, or
        the checkpoint does not fit the network the JSON describes.
    """
    config_path = Path(model_path).with_suffix(".json")
    config = read_json(config_path)
    keys = ("fc", "natt", "feature_dims", "num_classes")
    if not isinstance(config, dict) or not all(key in config for key in keys):
        raise UserError(f"{config_path}: expected a JSON object with {', '.join(keys)} (re-run training)")
    for key, value in (expect or {}).items():
        if config.get(key) != value:
            raise UserError(
                f"{model_path}: trained with {key}={config.get(key)}, "
                f"but params.yaml says {key}={value}; re-run training"
            )
    net = build_model(config["fc"], config["natt"], config["feature_dims"])
    network = f"the network of {config_path} (fc={config['fc']}, natt={config['natt']})"
    load_weights(
        net,
        model_path,
        network,
        lambda: f"the two files are from different runs; for {config_path}: {recovery.file_hint(config_path)}",
    )
    return net, config
