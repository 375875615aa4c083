"""What each stage reads, as ``dvc.yaml`` declares it: checked before the stage starts, digested
for resumable state and for the code version of results.

The inputs of a stage are its ``deps`` and ``params`` in ``dvc.yaml`` (one list for DVC and for
this module; tests/test_deps.py keeps them exact). :func:`check` is called by :func:`cli.main`
for every stage, so a missing or unreadable input stops the stage at once, in one line naming the
input and the stage that writes it, instead of after minutes of work. :func:`digest` hashes what
a stage reads, so state made from other inputs is never reused; :func:`code_version` names the
code that made a stage's outputs.
"""

import hashlib
from pathlib import Path

import yaml

from .errors import UserError

DVC_YAML = Path("dvc.yaml")
CODE_SUFFIXES = (".py", ".cc")  # files of code among the deps: Python and the C++ of fused_ops


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


def deps(stage, dvc_yaml=DVC_YAML):
    """The paths ``stage`` depends on, in dvc.yaml order (templated ``${...}`` entries left out).

    Raises:
        UserError: as :func:`load_stages`.
    """
    return _deps(load_stages(stage, dvc_yaml)[stage])


def _deps(spec):
    return [dep for dep in _paths(spec.get("deps", [])) if "${" not in str(dep)]


def params(stage, dvc_yaml=DVC_YAML):
    """The dotted params.yaml keys ``stage`` declares (e.g. ``["fc", "distributed.workers"]``).

    Raises:
        UserError: as :func:`load_stages`.
    """
    return _paths(load_stages(stage, dvc_yaml)[stage].get("params", []))


def code_version(stage, dvc_yaml=DVC_YAML):
    """Hex SHA-256 (16 digits) of the code that made ``stage``'s outputs.

    The code is every ``.py`` and ``.cc`` dep (:data:`CODE_SUFFIXES`) of ``stage`` and of each
    stage upstream of it (the stages whose outputs it reads, transitively): a result's figure
    changes code version exactly when code that can change it does.

    Raises:
        UserError: as :func:`load_stages`, or a code file cannot be read.
    """
    stages = load_stages(stage, dvc_yaml)
    todo, seen = [stage], set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(filter(None, (producer(dep, stages) for dep in _deps(stages[name]))))
    code = sorted({dep for name in seen for dep in _deps(stages[name]) if dep.endswith(CODE_SUFFIXES)})
    return digest(code)[:16]


def digest(paths):
    """Hex SHA-256 of the names and full contents of ``paths`` (files, or folders read recursively).

    Raises:
        UserError: a path is missing or unreadable.
    """
    total = hashlib.sha256()
    for path in map(Path, paths):
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for file in files:
            total.update(f"{file.as_posix()}\0".encode())
            try:
                with open(file, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 24), b""):
                        total.update(block)
            except OSError as err:
                raise UserError(f"{file}: cannot be read ({err.strerror})") from None
    return total.hexdigest()


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
    for dep in deps(stage, dvc_yaml):  # templated deps: DVC resolves and checks them
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
