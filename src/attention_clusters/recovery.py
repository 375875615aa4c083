"""Getting a stage's outputs back: the smallest command that restores or re-makes them.

``dvc.lock`` records the outputs of every stage's last successful run. Those DVC caches come
back with ``dvc checkout <path>`` (``-f`` over a damaged file); those declared ``cache: false``
are tracked by git here (metrics, the model's JSON, dvclive) and come back with
``git checkout <path>``. Re-running only the stage that writes a file is ``dvc repro -s <stage>``.

``dvc repro`` deletes a stage's outputs (all but ``persist: true`` ones) before it runs the
stage, so a stage that fails under DVC leaves them deleted; run by itself
(``python stages/<stage>.py``) it leaves them as they were. :func:`restore_hint` names what is
missing and the commands that bring it back; :func:`file_hint` the fix for one bad file.
"""

from pathlib import Path

import yaml

from .errors import UserError
from .inputs import DVC_YAML, outputs, producer, read_stages

DVC_LOCK = Path("dvc.lock")


def _locked(stage, dvc_lock):
    """Paths of ``stage``'s outputs that ``dvc_lock`` records (an empty set if it cannot be read)."""
    try:
        lock = yaml.safe_load(Path(dvc_lock).read_text(encoding="utf-8"))
        return {out["path"] for out in lock["stages"][stage].get("outs") or []}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        return set()


def _stages(dvc_yaml):
    try:
        return read_stages(dvc_yaml)
    except UserError:
        return {}


def _cached(options):
    """True for an output DVC caches (restored by dvc checkout), False for ``cache: false``."""
    return options.get("cache", True) is not False


def _command(cached, paths, force=False):
    tool = "dvc checkout" + (" -f" if force else "") if cached else "git checkout"
    return f"{tool} {' '.join(paths)}"


def file_hint(path, dvc_yaml=DVC_YAML, dvc_lock=DVC_LOCK):
    """The smallest fix for a damaged or unreadable output file ``path``, as text for an error line.

    E.g. ``restore it: dvc checkout -f data/features/test.npy, or re-make it: dvc repro -s feature``;
    only ``re-make it: ...`` when ``dvc_lock`` records no earlier output to restore, and a plain
    ``re-create it with the stage that writes it`` when no stage of ``dvc_yaml`` writes it.
    Never raises.
    """
    stages = _stages(dvc_yaml)
    stage = producer(path, stages)
    if stage is None:
        return "re-create it with the stage that writes it"
    remake = f"re-make it: dvc repro -s {stage}"
    for out, options in outputs(stages[stage]):
        if out in _locked(stage, dvc_lock) and (Path(path) == Path(out) or Path(out) in Path(path).parents):
            return f"restore it: {_command(_cached(options), [str(path)], force=True)}, or {remake}"
    return remake


def restore_hint(stage, dvc_yaml=DVC_YAML, dvc_lock=DVC_LOCK):
    """What a failed ``stage`` left missing and how to get it back, as text for its error line.

    Returns:
        e.g. ``its previous outputs are missing (dvc repro deletes them before running the stage);
        restore them: dvc checkout data/flash && git checkout metrics/flash.json``, naming only
        outputs that are missing now and recorded in ``dvc_lock``; None when there are none (the
        stage ran by itself, or never succeeded before). Never raises.
    """
    spec = _stages(dvc_yaml).get(stage)
    if not isinstance(spec, dict):
        return None
    recorded = _locked(stage, dvc_lock)
    missing = {True: [], False: []}  # cached by DVC or not -> paths
    for out, options in outputs(spec):
        if out in recorded and not Path(out).exists():
            missing[_cached(options)].append(out)
    if not any(missing.values()):
        return None
    commands = " && ".join(_command(cached, paths) for cached, paths in missing.items() if paths)
    why = "its previous outputs are missing (dvc repro deletes them before running the stage)"
    return f"{why}; restore them: {commands}"
