"""Entry-point wrapper shared by every ``stages/<stage>.py`` script."""

import sys
import time

from .errors import UserError


def main(stage, run):
    """Run ``run()`` for the named stage; a :class:`UserError` becomes one line on stderr.

    Args:
        stage: stage name used in the messages, e.g. ``"flash"``.
        run: a callable taking no arguments that returns a one-line summary string.

    Exits with status 1 on a :class:`UserError` and 130 on Ctrl-C; any other exception is a
    bug in this project and keeps its traceback.
    """
    start = time.perf_counter()
    try:
        summary = run()
    except UserError as err:
        print(f"{stage}: error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{stage}: interrupted", file=sys.stderr)
        sys.exit(130)
    print(f"{stage}: {summary} ({time.perf_counter() - start:.1f} s)")
