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

    from pydantic import BaseModel

    from attention_clusters import params  # before the hook: the audit's own import is not the stage's

    class Recording:
        """A view of validated params that notes each key read, with its dotted path."""

        def __init__(self, target, prefix=""):
            self._target, self._prefix = target, prefix

        def __getattr__(self, name):  # only for names not set in __init__: the params' keys
            value = getattr(self._target, name)
            if isinstance(value, BaseModel):  # a group: note the keys read inside it instead
                return Recording(value, f"{self._prefix}{name}.")
            keys.add(self._prefix + name)
            return value

    validate = params.validate  # params.load calls it: every stage's params pass through here
    params.validate = lambda tree, where="params.yaml": Recording(validate(tree, where))
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
