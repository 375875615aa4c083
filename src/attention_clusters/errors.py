"""The one exception type a user is meant to see.

Every check of user input (params.yaml, IDX files, checkpoints, rank tables) raises
:class:`UserError` with a one-line message naming the file or parameter and what was expected.
``stages/*.py`` catch it and print that line instead of a traceback (see :func:`cli.main`),
followed by its ``details`` (e.g. the last lines of a failed worker's log), if any.
"""


class UserError(Exception):
    """Bad input a user can fix: the message is one line, naming the file or key.

    Args:
        message: the one line (``str(err)``).
        details: optional further lines (str) that :func:`cli.main` prints under it, indented.
    """

    def __init__(self, message, details=()):
        super().__init__(message)
        self.details = tuple(details)
