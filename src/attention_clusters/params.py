"""Typed, validated view of ``params.yaml``.

The model's hyper-parameters are top-level keys named as in the MindSpore ModelZoo config
(``fc``, ``natt``, ``lr``, ``weight_decay``, ``batch_size``, ``epochs``, ``seed``) so that
``dvc exp run -S natt=32`` works verbatim; the data stages' parameters sit in groups.

The schema is a tree of pydantic models: strict types (``natt: 1.0`` or ``fc: true`` is not an
integer), no unknown keys (a typo), ranges and choices. A missing, unknown, mistyped or
out-of-range key raises :class:`UserError` with one line naming the key and what is allowed.
"""

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from .errors import UserError


def _int(low, high):
    """An integer in ``low..high``."""
    return Annotated[int, Field(ge=low, le=high, description=f"an integer in {low}..{high}")]


def _as_float(value):
    """YAML 1.1 (PyYAML) reads ``1e-3`` as a string; accept such a string as the number it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _number(low, above=False, high=1e6):
    """A finite number in ``[low, high]`` (``(low, high]`` when ``above``), read as a float."""
    bound = {"gt" if above else "ge": low}
    text = f"a number {'>' if above else '>='} {low:g} and <= {high:g}"
    return Annotated[float, BeforeValidator(_as_float), Field(**bound, le=high, description=text)]


def _choice(*options, hint=""):
    """One of the strings ``options``; ``hint`` is appended to the error message."""
    return Annotated[Literal[options], Field(description=f"one of {', '.join(options)}{hint}")]


class _Group(BaseModel):
    """A mapping of params.yaml: strict types, no unknown keys, read-only once validated."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class Mnist(_Group):
    """``mnist``: where the digits come from (see :mod:`attention_clusters.mnist`)."""

    source: _choice(
        "auto", "embedded", "folder", hint=" (a folder of MNIST files: set mnist.source=folder and mnist.folder=PATH)"
    )
    # not blank and not ~/...: a first character that is neither ~ nor blank, or blanks then text
    folder: Annotated[
        str,
        Field(
            pattern=r"^(?:[^~\s]|\s+\S)",
            description="a folder path, absolute or relative to the repository (not ~/...: DVC does not expand it)",
        ),
    ]
    timeout_s: _number(0.0, above=True, high=3600)
    retries: _int(0, 100)


class Noisy(_Group):
    """``noisy``: the Noisy-MNIST frames the feature extractor trains on."""

    train_repeats: _int(1, 100)
    test_repeats: _int(1, 100)
    train_noise: _int(0, 10_000_000)
    test_noise: _int(0, 10_000_000)
    seed: _int(0, 2**32 - 1)


class Flash(_Group):
    """``flash``: the Flash-MNIST videos per label and split."""

    train_per_label: _int(1, 1000)  # 1,000 per label: 20 GB of videos
    val_per_label: _int(1, 1000)
    test_per_label: _int(1, 1000)
    min_per_label: _int(1, 1000)  # floor of the scaled counts for a smaller digit pool
    preview_videos: _int(1, 64)
    seed: _int(0, 2**32 - 1)


class Feature(_Group):
    """``feature``: training of the frame feature extractor and its extraction batch."""

    epochs: _int(1, 1000)
    lr: _number(0.0, above=True)
    batch_size: _int(1, 1_000_000)
    extract_batch_videos: _int(1, 100_000)
    seed: _int(0, 2**32 - 1)


class Distributed(_Group):
    """``distributed``: data-parallel training (cross-key checks: :func:`distributed.check_settings`)."""

    launcher: _choice("none", "msrun", "mpirun", "rank_table")
    workers: _int(1, 4096)
    rank_table: Annotated[str, Field(description="a string (may be empty)")]
    master_port: _int(1024, 65535)
    nodes: _int(1, 4096)
    node_rank: _int(0, 4095)
    master_addr: Annotated[str, Field(pattern=r"\S", description="a non-empty string")]


class Export(_Group):
    """``export``: the fixed batch of the exported MINDIR / ONNX."""

    batch_size: _int(1, 100_000)


class Infer(_Group):
    """``infer``: the runtime of the exported model."""

    device: _choice("CPU", "GPU", "Ascend")
    backend: _choice("mindspore", "onnxruntime")


class Params(_Group):
    """The whole of params.yaml: the ModelZoo's names at the top level, then the groups."""

    # an int, not Literal[1, 2]: pydantic matches literals by equality, so true and 1.0 would pass
    fc: Annotated[int, Field(ge=1, le=2, description="one of 1, 2")]
    natt: _int(1, 4096)
    lr: _number(0.0, above=True)
    weight_decay: _number(0.0)
    batch_size: _int(1, 1_000_000)
    epochs: _int(1, 100_000)
    seed: _int(0, 2**32 - 1)
    device_target: _choice("CPU", "GPU", "Ascend")
    loss_reduction: _choice("sum", "mean")
    optimizer: _choice("adam", "adamw")
    lr_schedule: _choice("constant", "cosine")
    warmup_epochs: _int(0, 100_000)
    patience: _int(0, 100_000)
    report_test: Annotated[bool, Field(description="true or false")]
    mnist: Mnist
    noisy: Noisy
    flash: Flash
    feature: Feature
    distributed: Distributed
    export: Export
    infer: Infer


def validate(tree, where="params.yaml"):
    """Check a parsed params tree and return it as a :class:`Params` (read-only attributes).

    Args:
        tree: the mapping ``yaml.safe_load`` returned for params.yaml.
        where: file name used in the error messages.

    Returns:
        :class:`Params`, with the top-level keys as attributes and one nested model per group
        (``p.natt``, ``p.flash.train_per_label``); numbers of float keys are floats.

    Raises:
        UserError: one line for the first wrong key, an unknown key before any other.
    """
    try:
        return Params.model_validate(tree)
    except ValidationError as err:
        first = min(err.errors(), key=lambda error: error["type"] != "extra_forbidden")  # min keeps the first of equals
        raise UserError(_message(first, where)) from None


def _message(error, where):
    """The one line for a pydantic error: the dotted key, what it allows and what it got."""
    if not error["loc"]:  # the file itself is not a mapping
        return f"{where}: expected a mapping of keys to values at the top level"
    *groups, name = error["loc"]
    model = Params
    for group in groups:
        model = model.model_fields[group].annotation
    key = ".".join(map(str, error["loc"]))
    prefix = "".join(f"{group}." for group in groups)
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key '{key}' (known keys: {', '.join(prefix + known for known in model.model_fields)})"
    field = model.model_fields[name]
    if isinstance(field.annotation, type) and issubclass(field.annotation, _Group):
        allowed = f"a group of keys ({', '.join(f'{key}.{inner}' for inner in field.annotation.model_fields)})"
    else:
        allowed = field.description
    if error["type"] == "missing":
        return f"{where}: missing key '{key}' (expected {allowed})"
    return f"{where}: {key} must be {allowed}, got {error['input']!r}"


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
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
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
