"""`python -m bench [--quick]`: run every scenario and write the report."""

from __future__ import annotations

import sys

from .run import main

sys.exit(main())
