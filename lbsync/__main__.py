"""`python -m lbsync` is the `lbsync` command."""

import sys

from lbsync.cli.main import main

sys.exit(main())
