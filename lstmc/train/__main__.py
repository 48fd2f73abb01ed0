"""`python -m lstmc.train ...`: the same as `lstmc train ...` (see cli.main)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
