"""dvc.yaml says exactly what each stage's code is, and the committed dvc.lock matches the code.

What each stage reads of data and params is checked against a real run in test_pipeline.py.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from attention_clusters import inputs

SRC = ROOT / "src"
PACKAGE = "attention_clusters"
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_file(name):
    """The source file of project module ``name`` (e.g. ``attention_clusters.models``), or None."""
    base = SRC.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def imported_files(path):
    """Project source files that ``path`` imports, anywhere in it (also inside functions), with the
    ``__init__.py`` of every package on the way (Python runs them too)."""
    package = ".".join(path.relative_to(SRC).parent.parts) if SRC in path.parents else ""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = (
                ".".join(parts[: len(parts) - node.level + 1] + [node.module or ""]).strip(".")
                if node.level
                else node.module
            )
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    files = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == PACKAGE:
            files.update(filter(None, (module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1))))
    return files


def import_closure(script):
    """Repository-relative paths of ``script`` and every project file it imports, transitively,
    with the C++ source a module compiles (``X.cc`` beside ``X.py``, e.g. fused_ops.cc)."""
    todo, seen = [script], set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(imported_files(path))
    seen |= {path.with_suffix(".cc") for path in seen if path.with_suffix(".cc").is_file()}
    return {path.relative_to(ROOT).as_posix() for path in seen}


def test_the_import_closure_follows_relative_and_lazy_imports():
    closure = import_closure(ROOT / "stages" / "train.py")
    assert "src/attention_clusters/models/__init__.py" in closure  # package run on the way
    assert "src/attention_clusters/evaluation.py" in closure  # `from . import evaluation` in training.py
    assert "src/attention_clusters/models/init.py" in closure  # `from .init import` in models/
    assert "src/attention_clusters/export.py" not in closure
    assert "src/attention_clusters/fused_ops.cc" in closure  # compiled by fused_ops.py


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_the_import_closure(stage):
    """Each stage's .py deps are exactly its script's import closure: an import added without
    listing it in dvc.yaml fails here, and so does a dep no longer imported."""
    script = ROOT / "stages" / f"{stage}.py"
    assert STAGES[stage]["cmd"] == f"python stages/{stage}.py"
    code = {dep for dep in inputs._paths(STAGES[stage]["deps"]) if dep.endswith(inputs.CODE_SUFFIXES)}
    closure = import_closure(script)
    assert not closure - code, f"dvc.yaml: stage {stage} misses code deps {sorted(closure - code)}"
    assert not code - closure, f"dvc.yaml: stage {stage} lists code it does not import: {sorted(code - closure)}"


def test_every_stage_script_is_a_stage():
    assert {path.stem for path in (ROOT / "stages").glob("*.py")} == set(STAGES)


def test_no_stage_always_runs_and_params_text_is_checked():
    assert not [name for name, spec in STAGES.items() if spec.get("always_changed")]
    assert "params.yaml" in STAGES["check"]["deps"]  # any edit of its text re-validates it


def test_no_dep_lies_inside_another_stages_directory_output():
    """A file inside a directory output is declared as the whole directory: with a dep such as
    data/mnist/source.json, `dvc exp run` (DVC 3.67) fails with "failed to load directory
    ('data', 'mnist')" once a stage is restored from the run cache while the DVC cache lacks the
    .dir object that dvc.lock records (a fresh clone; tests/test_pipeline.py reproduces it)."""
    outs = {out for spec in STAGES.values() for out, _ in inputs.outputs(spec)}
    inside = sorted(
        (stage, dep, out)
        for stage, spec in STAGES.items()
        for dep in inputs._deps(spec)
        for out in outs
        if Path(out) in Path(dep).parents
    )
    assert not inside, f"dvc.yaml: deps inside a directory output, declare the directory instead: {inside}"


def lock_mismatches(repo):
    """What `dvc status` in ``repo`` finds changed in commands, code or params since dvc.lock, as
    (stage, path or kind, how) tuples. Absent data made by a stage is no change: a clean checkout
    has no DVC outputs."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["dvc", "status", "--json"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    stages = yaml.safe_load((Path(repo) / "dvc.yaml").read_text())["stages"]
    stale = []
    for stage, changes in json.loads(result.stdout or "{}").items():
        for change in changes:
            if not isinstance(change, dict):
                stale.append((stage, change, ""))  # e.g. "changed command"
                continue
            for kind, entries in change.items():
                if kind == "changed deps":
                    stale += [
                        (stage, path, why)
                        for path, why in entries.items()
                        if why != "deleted" or not inputs.producer(path, stages)
                    ]
                elif kind != "changed outs":
                    stale.append((stage, kind, entries))
    return stale


def test_committed_lock_matches_the_code_and_params():
    """The committed metrics come from the committed code: dvc.lock records this code and params."""
    stale = lock_mismatches(ROOT)
    assert not stale, f"dvc.lock does not match the code and params (run dvc repro and commit dvc.lock): {stale}"
