"""Exit statuses, the same for every command."""

from typing import Final

EXIT_OK: Final = 0  # done, in step
EXIT_FAILED: Final = 1  # the work failed: a target not applied, a refused entry, a revert
EXIT_USAGE: Final = 2  # the configuration or the command line is wrong
