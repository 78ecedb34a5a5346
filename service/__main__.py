"""`python -m service` is the `inbox` command."""

import sys

from .cli import main

sys.exit(main())
