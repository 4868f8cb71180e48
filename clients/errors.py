"""The one exception type for bad user input.

Anything a user can get wrong (a dataset name, a missing folder, a sparsity out
of range) raises InputError with a one-line message naming the culprit; the CLI
prints it and exits with status 2, never a traceback.
"""


class InputError(ValueError):
    """Bad user input; str(err) is a one-line message naming the culprit."""
