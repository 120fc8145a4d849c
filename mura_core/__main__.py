"""`python -m mura_core ...`: see `mura_core.cli`."""

import sys

from .cli import main

sys.exit(main())
