"""What a stage really reads: loaded by every Python process started with this folder on PYTHONPATH.

Active only with ``AC_AUDIT_DIR`` set and a ``stages/<name>.py`` script as the program. It records
the files the process opens for reading (Python's ``open`` audit event, which numpy's loads and
our own reads raise) and every params.yaml key the stage reads, and at exit writes them to
``$AC_AUDIT_DIR/<stage>-<pid>.json``: ``{"stage", "read": [paths relative to the cwd], "params":
[dotted keys]}``. tests/test_pipeline.py compares them with the stage's deps in dvc.yaml.
"""

import atexit
import json
import os
import sys
from pathlib import Path

_DIR = os.environ.get("AC_AUDIT_DIR")
_SCRIPT = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None


def _start(stage):
    cwd = Path.cwd().resolve()
    read, keys = set(), set()

    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and not _writes(args[1], args[2]):
            path = Path(os.fsdecode(args[0]))
            try:
                read.add(path.resolve().relative_to(cwd).as_posix())
            except ValueError:
                pass  # outside the repository: libraries, /proc, temporary files

    from attention_clusters import params  # before the hook: the audit's own import is not the stage's


    class Recording(params.SimpleNamespace):
        """A params namespace that notes each key read, with its dotted path."""

        def __init__(self, prefix, **values):
            super().__init__(**values)
            object.__setattr__(self, "_prefix", prefix)

        def __getattribute__(self, name):
            value = object.__getattribute__(self, name)
            if not name.startswith("_") and not isinstance(value, Recording):
                keys.add(object.__getattribute__(self, "_prefix") + name)
            return value

    def namespace(tree, prefix=""):
        return Recording(prefix, **{k: namespace(v, f"{prefix}{k}.") if isinstance(v, dict) else v for k, v in tree.items()})

    params._namespace = namespace
    sys.addaudithook(hook)

    def dump():
        record = {"stage": stage, "read": sorted(read), "params": sorted(keys)}
        Path(_DIR, f"{stage}-{os.getpid()}.json").write_text(json.dumps(record))

    atexit.register(dump)


def _writes(mode, flags):
    if isinstance(mode, str) and mode:
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR) != 0


if _DIR and _SCRIPT is not None and _SCRIPT.parent.name == "stages" and _SCRIPT.suffix == ".py":
    _start(_SCRIPT.stem)
