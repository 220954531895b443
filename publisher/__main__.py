"""``python -m publisher``: same as the ``cpl-publisher`` command."""

import sys

from publisher.cli import main

sys.exit(main())
