"""`python -m prefgen.cli ...`: the same as the `prefgen` command."""

import sys

from prefgen.cli import main

sys.exit(main())
