"""``python -m distvmc`` is the ``distvmc`` command."""

import sys

from distvmc.cli import main

sys.exit(main())
