"""The one exception type for mistakes a user can fix (a flag, a file, a class name).

The CLIs print its message as one sentence on stderr and exit with status 2; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem caused by the user's input, explained in one sentence."""
