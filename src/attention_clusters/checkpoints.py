"""MindSpore checkpoints written atomically and loaded strictly, for every network of the project."""

from pathlib import Path

import mindspore as ms

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


def load_weights(cell, path):
    """Load a checkpoint into ``cell``; every parameter of ``cell`` must be found.

    Raises:
        UserError: the file is missing or does not match the network's parameters.
    """
    if not Path(path).is_file():
        raise UserError(f"{path}: checkpoint not found (run the training stage first)")
    try:
        missing, _ = ms.load_param_into_net(cell, ms.load_checkpoint(str(path)), strict_load=True)
    except (ValueError, RuntimeError, TypeError) as err:
        reason = str(err).strip().splitlines()[0][:160]
        raise UserError(f"{path}: unreadable or mismatched checkpoint ({reason})") from None
    if missing:
        raise UserError(f"{path}: checkpoint lacks {len(missing)} parameters of this network, e.g. {missing[0]}")
