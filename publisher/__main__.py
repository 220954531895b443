"""``python -m publisher``: same as the ``cpl-publisher`` command."""

import sys

from .cli import main

sys.exit(main())
