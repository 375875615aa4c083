"""The one exception type a user is meant to see.

Every check of user input (params.yaml, IDX files, checkpoints, rank tables) raises
:class:`UserError` with a one-line message naming the file or parameter and what was expected.
``stages/*.py`` catch it and print that line instead of a traceback (see :func:`cli.main`).
"""


class UserError(Exception):
    """Bad input a user can fix: the message is one line, naming the file or key."""
