"""Exit statuses, the same for every command, and the error that means the second."""

from typing import Final

EXIT_OK: Final = 0  # done, in step
EXIT_FAILED: Final = 1  # the work failed: a target not applied, a refused entry, a revert
EXIT_USAGE: Final = 2  # the configuration or the command line is wrong


class UsageError(Exception):
    """A command-line argument that cannot be used (exit status 2)."""
