"""MindSpore checkpoints written atomically and loaded strictly, for every network of the project."""

from pathlib import Path

import mindspore as ms

from . import recovery
from .errors import UserError
from .storage import atomic_path, reserve


def save_checkpoint(cell, path):
    """``mindspore.save_checkpoint`` of ``cell``'s parameters, written atomically.

    Its size is reserved on disk first, so a full disk or read-only folder is one
    :class:`UserError` line before MindSpore writes anything.
    """
    size = sum(param.data.nbytes for param in cell.get_parameters())
    with atomic_path(path, size) as tmp:
        reserve(tmp.with_suffix(".tmp"), size)  # where MindSpore writes before renaming to tmp
        ms.save_checkpoint(cell, str(tmp))


def load_weights(cell, path, network="this network", fix="re-run training: dvc repro -s train"):
    """Load a checkpoint into ``cell``; every parameter of ``cell`` must be in it, of the same shape.

    The checkpoint is compared with ``cell`` before MindSpore loads it, so a mismatch is our one
    line (naming the first differing parameter and both shapes), not the library's log.

    Args:
        network: how the message names what ``cell`` was built from.
        fix: the end of the message for a checkpoint that does not fit ``cell``, or a callable
            returning it (called only then).

    Raises:
        UserError: the file is missing or not a MindSpore checkpoint, lacks parameters of
        ``cell``, or holds one of another shape.
    """
    if not Path(path).is_file():
        raise UserError(f"{path}: checkpoint not found (run the training stage first)")
    try:
        saved = ms.load_checkpoint(str(path))
    except (ValueError, RuntimeError, TypeError) as err:
        raise UserError(f"{path}: not a readable MindSpore checkpoint; {recovery.file_hint(path)}") from err
    missing = [param.name for param in cell.get_parameters() if param.name not in saved]
    if missing:
        raise UserError(
            f"{path}: checkpoint lacks {len(missing)} parameters of {network}, e.g. {missing[0]}; {_text(fix)}"
        )
    for param in cell.get_parameters():
        if tuple(saved[param.name].shape) != tuple(param.shape):
            raise UserError(
                f"{path}: parameter {param.name} is {tuple(saved[param.name].shape)} in the checkpoint "
                f"but {tuple(param.shape)} in {network}; {_text(fix)}"
            )
    ms.load_param_into_net(cell, saved, strict_load=True)


def _text(fix):
    return fix() if callable(fix) else fix
