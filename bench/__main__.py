"""`python -m bench`: the same command as `relay bench`."""

import sys

from bench.cli import main

sys.exit(main())
