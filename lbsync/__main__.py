"""`python -m lbsync` is the `lbsync` command."""

import sys

from lbsync.cli import main

sys.exit(main())
