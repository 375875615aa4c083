"""Every stage's inputs, checked before the stage starts work.

The inputs of a stage are its ``deps`` in ``dvc.yaml`` (one list for DVC and for this check).
:func:`check` is called by :func:`cli.main` for every stage, so a missing or unreadable input
stops the stage at once, in one line naming the input and the stage that writes it, instead of
after minutes of work.
"""

from pathlib import Path

import yaml

from .errors import UserError

DVC_YAML = Path("dvc.yaml")


def read_stages(dvc_yaml=DVC_YAML):
    """The ``stages`` mapping of ``dvc_yaml`` (name -> deps, outs, ...).

    Raises:
        UserError: dvc.yaml is missing or unreadable.
    """
    try:
        return yaml.safe_load(Path(dvc_yaml).read_text(encoding="utf-8"))["stages"]
    except FileNotFoundError:
        raise UserError(f"{dvc_yaml}: not found (run the stages from the repository root)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as err:
        raise UserError(f"{dvc_yaml}: cannot read its stages ({type(err).__name__})") from None


def load_stages(stage, dvc_yaml=DVC_YAML):
    """The ``stages`` mapping of ``dvc_yaml`` (name -> deps, outs, ...), which must hold ``stage``.

    Raises:
        UserError: dvc.yaml is missing or unreadable, or has no such stage.
    """
    stages = read_stages(dvc_yaml)
    if stage not in stages:
        raise UserError(f"{dvc_yaml}: no stage '{stage}'")
    return stages


def _paths(entries):
    """Paths of a deps/outs list, whose items are a path or ``{path: options}``."""
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries or []]


def outputs(spec):
    """``(path, options)`` of every output (outs, metrics, plots) of a stage's spec; options a dict."""
    entries = (spec.get("outs") or []) + (spec.get("metrics") or []) + (spec.get("plots") or [])
    pairs = [next(iter(entry.items())) if isinstance(entry, dict) else (entry, None) for entry in entries]
    return [(path, options or {}) for path, options in pairs]


def producer(path, stages):
    """Name of the stage whose outputs hold ``path`` (the output itself or a folder above it), or None."""
    path = Path(path)
    for name, spec in stages.items():
        for out, _ in outputs(spec):
            if path == Path(out) or Path(out) in path.parents:
                return name
    return None


def check(stage, dvc_yaml=DVC_YAML):
    """Check that every dependency of ``stage`` in ``dvc_yaml`` exists and can be read.

    A folder must hold at least one file, and each of its files must open for reading.

    Raises:
        UserError: naming the first missing, empty or unreadable input and the stage that
        writes it (``dvc repro <that stage>``).
    """
    stages = load_stages(stage, dvc_yaml)
    for dep in _paths(stages[stage].get("deps", [])):
        if "${" in str(dep):
            continue  # templated: DVC resolves it
        problem = _problem(Path(dep))
        if problem:
            maker = producer(dep, stages)
            hint = f"run the {maker} stage first: dvc repro {maker}" if maker else "restore it (git checkout)"
            raise UserError(f"{dep}: input of stage {stage} {problem}; {hint}")


def _problem(path):
    """Why ``path`` cannot serve as an input, or None."""
    if path.is_dir():
        files = [f for f in path.rglob("*") if f.is_file()]
        if not files:
            return "is an empty folder"
        return next(filter(None, map(_unreadable, files)), None)
    if not path.exists():
        return "not found"
    return _unreadable(path)


def _unreadable(path):
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as err:
        return f"cannot be read ({path}: {err.strerror})"
    return None
