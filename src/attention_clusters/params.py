"""Typed, validated view of ``params.yaml``.

The model's hyper-parameters are top-level keys named as in the MindSpore ModelZoo config
(``fc``, ``natt``, ``lr``, ``weight_decay``, ``batch_size``, ``epochs``, ``seed``) so that
``dvc exp run -S natt=32`` works verbatim; the data stages' parameters sit in groups.

Every key is checked on load. A missing key, an unknown key (a typo), a wrong type or a value
out of range raises :class:`UserError` with one line naming the key and what is allowed.
"""

import math
from pathlib import Path
from types import SimpleNamespace

import yaml

from .errors import UserError


def _int(low=None, high=None):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        return (low is None or value >= low) and (high is None or value <= high)

    text = "an integer"
    if low is not None and high is not None:
        text += f" in {low}..{high}"
    elif low is not None:
        text += f" >= {low}"
    return check, text, None


def _float(low=0.0, strict=False, high=1e6):
    def check(value):
        value = _as_float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        try:
            value = float(value)
        except OverflowError:
            return False
        if not math.isfinite(value) or value > high:
            return False
        return value > low if strict else value >= low

    return check, f"a number {'>' if strict else '>='} {low:g} and <= {high:g}", lambda value: float(_as_float(value))


def _as_float(value):
    """YAML 1.1 (PyYAML) reads ``1e-3`` as a string; accept such a string as the number it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _choice(*options):
    def check(value):  # type must match too: fc: 1.0 or fc: true is not fc: 1
        return any(type(value) is type(option) and value == option for option in options)

    return check, "one of " + ", ".join(map(str, options)), None


def _text(empty=False):
    if empty:
        return (lambda value: isinstance(value, str)), "a string (may be empty)", None
    return (lambda value: isinstance(value, str) and value.strip() != ""), "a non-empty string", None


# key path -> (check, description of what is allowed, converter of an accepted value or None)
SCHEMA = {
    "fc": _choice(1, 2),
    "natt": _int(1, 4096),
    "lr": _float(0.0, strict=True),
    "weight_decay": _float(0.0),
    "batch_size": _int(1, 1_000_000),
    "epochs": _int(1, 100_000),
    "seed": _int(0, 2**32 - 1),
    "device_target": _choice("CPU", "GPU", "Ascend"),
    "loss_reduction": _choice("sum", "mean"),
    "optimizer": _choice("adam", "adamw"),
    "lr_schedule": _choice("constant", "cosine"),
    "warmup_epochs": _int(0, 100_000),
    "patience": _int(0, 100_000),
    "mnist.source": (_choice("auto", "embedded", "folder")[0], "one of auto, embedded, folder (a folder of MNIST files: set mnist.source=folder and mnist.folder=PATH)", None),
    "mnist.folder": (
        lambda value: isinstance(value, str) and value.strip() != "" and not value.startswith("~"),
        "a folder path, absolute or relative to the repository (not ~/...: DVC does not expand it)",
        None,
    ),
    "mnist.timeout_s": _float(0.0, strict=True, high=3600),
    "mnist.retries": _int(0, 100),
    "noisy.train_repeats": _int(1, 100),
    "noisy.test_repeats": _int(1, 100),
    "noisy.train_noise": _int(0, 10_000_000),
    "noisy.test_noise": _int(0, 10_000_000),
    "noisy.seed": _int(0, 2**32 - 1),
    "flash.train_per_label": _int(1, 1000),  # 1,000 per label: 20 GB of videos
    "flash.val_per_label": _int(1, 1000),
    "flash.test_per_label": _int(1, 1000),
    "flash.min_per_label": _int(1, 1000),  # floor of the scaled counts for a smaller digit pool
    "flash.preview_videos": _int(1, 64),
    "flash.seed": _int(0, 2**32 - 1),
    "feature.epochs": _int(1, 1000),
    "feature.lr": _float(0.0, strict=True),
    "feature.batch_size": _int(1, 1_000_000),
    "feature.extract_batch_videos": _int(1, 100_000),
    "feature.seed": _int(0, 2**32 - 1),
    "distributed.launcher": _choice("none", "msrun", "mpirun", "rank_table"),
    "distributed.workers": _int(1, 4096),
    "distributed.rank_table": _text(empty=True),
    "distributed.master_port": _int(1024, 65535),
    "distributed.nodes": _int(1, 4096),
    "distributed.node_rank": _int(0, 4095),
    "distributed.master_addr": _text(),
    "export.batch_size": _int(1, 100_000),
    "infer.device": _choice("CPU", "GPU", "Ascend"),
    "infer.backend": _choice("mindspore", "onnxruntime"),
}


GROUPS = sorted({key.split(".")[0] for key in SCHEMA if "." in key})


def _flatten(tree, where, prefix=""):
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, where, path + "."))
        elif path in GROUPS:
            raise UserError(f"{where}: {path} must be a group of keys ({', '.join(k for k in SCHEMA if k.startswith(path + '.'))})")
        else:
            flat[path] = value
    return flat


def validate(tree, where="params.yaml"):
    """Check a parsed params tree against :data:`SCHEMA` and return it as namespaces.

    Args:
        tree: the mapping ``yaml.safe_load`` returned for params.yaml.
        where: file name used in the error messages.

    Returns:
        ``SimpleNamespace`` with the top-level keys as attributes and one nested namespace
        per group (``p.natt``, ``p.flash.train_per_label``).

    Raises:
        UserError: on the first missing, unknown, mistyped or out-of-range key.
    """
    if not isinstance(tree, dict):
        raise UserError(f"{where}: expected a mapping of keys to values at the top level")
    flat = _flatten(tree, where)
    for key in flat:
        if key not in SCHEMA:
            raise UserError(f"{where}: unknown key '{key}' (known keys: {', '.join(SCHEMA)})")
    for key, (check, allowed, convert) in SCHEMA.items():
        if key not in flat:
            raise UserError(f"{where}: missing key '{key}' (expected {allowed})")
        if not check(flat[key]):
            raise UserError(f"{where}: {key} must be {allowed}, got {flat[key]!r}")
        if convert is not None:
            _set(tree, key, convert(flat[key]))
    return _namespace(tree)


def _set(tree, key, value):
    *groups, last = key.split(".")
    for group in groups:
        tree = tree[group]
    tree[last] = value


def _namespace(tree):
    return SimpleNamespace(**{k: _namespace(v) if isinstance(v, dict) else v for k, v in tree.items()})


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key, line):
        super().__init__(key, line)
        self.key, self.line = key, line


def load(path="params.yaml"):
    """Read and validate a params file (see :func:`validate`).

    Raises:
        UserError: the file is missing, is not YAML, has a key twice in one mapping, or a key
        is wrong.
    """
    path = Path(path)
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as dup:
        raise UserError(f"{path}: key '{dup.key}' appears twice (again at line {dup.line}); keep one") from None
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (run from the repository root)") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        at = f" at line {line + 1}" if line is not None else ""
        raise UserError(f"{path}: not valid YAML{at}") from None
    return validate(tree, where=str(path))
