"""Resumable training state: what may be reused (the fingerprint), loading it, committing an epoch.

After every epoch the full training state (weights and Adam moments) and ``state.json`` are
written to the state folder, so re-running continues after the last completed epoch. The state
is only reused when the stage's inputs are unchanged (:func:`fingerprint`); ``epochs`` may grow
to continue a finished run (except under the cosine schedule, which depends on it).

An epoch is committed as one unit (:func:`commit`): checkpoints are written under new names
(``last-<epoch>``, ``best-<epoch>``) and ``state.json``, which names them, is replaced last; a
process killed in between resumes from the previous epoch's consistent state.
"""

import hashlib
import json
from pathlib import Path

from . import inputs
from .checkpoints import save_checkpoint
from .storage import write_json
from .train_step import lr_varies

STATE_JSON = "state.json"
CHECKPOINTS = ("last", "best")  # state["last"], state["best"]: checkpoint file names in the state folder


def fingerprint(p, world_size, kernels, stage="train"):
    """Hex digest of everything that makes saved training state reusable: the stage's inputs.

    That is every dep of ``stage`` in dvc.yaml, read in full (its code, which tests/test_deps.py
    keeps equal to the script's import closure, and its data), the values of the params it
    declares, the world size and the kernels (``kernels``: "fused" or "mindspore", see
    :func:`fused_ops.load`; they agree up to float32 rounding only). ``epochs`` is left out so
    that raising it continues a finished run, except when the learning rate changes per step
    (cosine schedule or warm-up): the schedule then depends on it and is saved with the
    optimiser's state. State made by other code, params, data or kernels is therefore never
    resumed.

    Args:
        p: validated params; world_size: number of data-parallel workers; kernels: str.

    Raises:
        UserError: dvc.yaml or a dep cannot be read.
    """
    values = {key: _get(p, key) for key in inputs.params(stage) if key != "epochs" or lr_varies(p)}
    settings = json.dumps({"params": values, "world_size": world_size, "kernels": kernels}, sort_keys=True)
    return hashlib.sha256((settings + inputs.digest(inputs.deps(stage))).encode()).hexdigest()


def _get(p, key):
    """The value of dotted params key ``key`` (e.g. ``distributed.workers``) in namespace ``p``."""
    for part in key.split("."):
        p = getattr(p, part)
    return p


def load_state(state_dir, fp, epochs):
    """The saved training state in ``state_dir`` if it can continue to ``epochs``, else a fresh one.

    Saved state is reused when its fingerprint is ``fp``, the checkpoints it names exist and
    it has not gone past ``epochs`` (a run asked for fewer epochs than were done starts over).

    Returns:
        dict with ``fingerprint``, ``epoch`` (last completed, 0 when fresh), ``best_epoch``,
        ``best_val_top1``, ``history`` (one record per epoch) and, once an epoch is committed,
        ``last`` and ``best`` (checkpoint file names in ``state_dir``).
    """
    state_dir = Path(state_dir)
    state = _saved(state_dir)
    if (
        state.get("fingerprint") == fp
        and 0 < state.get("epoch", 0) <= epochs
        and all(isinstance(state.get(key), str) and (state_dir / state[key]).is_file() for key in CHECKPOINTS)
    ):
        return state
    return {"fingerprint": fp, "epoch": 0, "best_epoch": 0, "best_val_top1": -1.0, "history": []}


def _saved(state_dir):
    """``state_dir``'s ``state.json`` as a dict, whatever made it ({} when absent or unreadable)."""
    try:
        state = json.loads((Path(state_dir) / STATE_JSON).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def saved_epoch(state_dir):
    """The last completed epoch that ``state_dir``'s ``state.json`` records, whatever made it
    (0 when there is none or it is unreadable)."""
    epoch = _saved(state_dir).get("epoch", 0)
    return epoch if isinstance(epoch, int) else 0


def commit(state_dir, state, step, net, improved):
    """Commit the state of the epoch just done (``state["epoch"]``) to ``state_dir``.

    New checkpoints first (``step``: weights and optimiser moments; ``net``: the weights, only
    when ``improved``), then ``state.json`` naming them; older checkpoints are removed last.
    Sets ``state["last"]`` (and ``state["best"]``).

    Raises:
        UserError: a file cannot be written (e.g. a full disk); the previous epoch's state stays.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state["last"] = f"last-{state['epoch']:05d}.ckpt"
    save_checkpoint(step, state_dir / state["last"])
    if improved:
        state["best"] = f"best-{state['epoch']:05d}.ckpt"
        save_checkpoint(net, state_dir / state["best"])
    write_json(state_dir / STATE_JSON, state)
    for old in state_dir.glob("*.ckpt"):
        if old.name not in (state["last"], state["best"]):
            old.unlink()
